"""Importing data from files: sales orders from CSV, in chunks, idempotently."""
