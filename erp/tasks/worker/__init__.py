"""What workers run of the task subsystem: the run guard (each occurrence of a periodic task
runs once, its outcome recorded), alert delivery, and file retention."""

# Found by the worker's task discovery (erp.core.task_registry): tasks, and the run guard's
# signal handlers, which every worker installs.
TASK_MODULES = ("run_guard", "heartbeat", "alert_delivery", "file_retention")
