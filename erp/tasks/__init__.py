"""The task subsystem: periodic scheduling, the run ledger and task status, one room per process.

calendar/ (pure schedule arithmetic, shared), beat/, worker/ and api/ (what beat, the workers and
the web process run; independent of each other); beside them what all share: the tables
(scheduler_models, health_check_models), the ledger's vocabulary (ledger_kinds) and the message
of a periodic run (periodic_messages). db_scheduler is beat's entry point and
periodic_health_checks a worker task; their paths are the product design's.
"""

# Found by the worker's task discovery (erp.core.task_registry), beside the worker room's own.
TASK_MODULES = ("periodic_health_checks",)
