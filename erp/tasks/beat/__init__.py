"""What beat runs, beside its entry point erp.tasks.db_scheduler: planning due rows, the run
ledger's statements as beat uses them, the entries from configuration, waking on changes, and
the heartbeat."""
