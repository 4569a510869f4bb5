"""Runs the whole dagrelay system on one machine: ``python -m local_emulator up|down|demo``."""
