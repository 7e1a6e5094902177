"""Sales reports: aggregated in PostgreSQL, written as CSV or XLSX, stored and downloaded as files."""
