"""What users do with a built dataset: load, get, cite, diff, verify, export, report."""
