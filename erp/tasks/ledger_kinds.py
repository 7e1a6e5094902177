"""The run ledger's vocabulary, each word defined once: overlap policies, the states of an
occurrence, why one was skipped, where it came from, and the kinds of alert.

Like the schedule vocabulary (erp.tasks.calendar.kinds), the request schemas use the `Literal`
types and the tables' check constraints and the ledger's statements the tuples derived from
them. Beat, the worker and the API all speak it.
"""

from __future__ import annotations

from typing import Literal, get_args

# What to do with an occurrence whose previous occurrence has not finished: send it anyway
# (`allow`), record it as skipped (`skip`), or hold it until the previous one finishes, at most
# one held (`buffer_one`).
OverlapPolicy = Literal["allow", "skip", "buffer_one"]
OVERLAP_POLICIES: tuple[OverlapPolicy, ...] = get_args(OverlapPolicy)

# The life of one occurrence in the run ledger (periodic_task_runs):
#   held -> planned -> sent -> started -> succeeded | failed | retried (-> started ...) | revoked
#   or skipped (with a SkipReason) instead of being sent.
RunState = Literal["held", "planned", "sent", "started", "succeeded", "failed", "retried", "revoked", "skipped"]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)
# States of an occurrence that has not finished (an overlap, a deadline to watch).
UNFINISHED_STATES: tuple[RunState, ...] = ("held", "planned", "sent", "started", "retried")
FINISHED_STATES: tuple[RunState, ...] = ("succeeded", "failed", "revoked", "skipped")

SkipReason = Literal["misfire", "overlap", "paused", "expired"]
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)

# Where an occurrence came from: beat's schedule, "run now", or a backfill of a past range.
RunOrigin = Literal["schedule", "manual", "backfill"]
RUN_ORIGINS: tuple[RunOrigin, ...] = get_args(RunOrigin)

AlertKind = Literal["start_deadline_missed", "finish_deadline_missed", "failure", "auto_pause", "stopped_firing"]
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
