"""bigquery"""
