"""Pipeline definitions: files (YAML) or Python, checked, written as rows, exported back."""
