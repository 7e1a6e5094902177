"""What the web process runs of the task subsystem: the periodic-task admin API, the run ledger
read and fed from the API (runs, last outcomes, backfill, "why not", alerts, the load forecast),
task status, beat's heartbeats and the health check results."""
