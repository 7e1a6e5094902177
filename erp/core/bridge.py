"""The one way a synchronous Celery task calls the async service layer.

    @celery_app.task
    def dispatch_sales_report(report_id: int) -> dict:
        return run_service(build_sales_report, report_id)

`run_service(fn, *args, **kwargs)` awaits `fn(*args, session=<fresh AsyncSession>, **kwargs)`
through `asgiref.sync.async_to_sync`, commits when it returns and rolls back when it raises.

Why a long-lived loop: `async_to_sync` called from a thread with no running loop creates a new
thread and event loop per call, and a pooled `AsyncEngine` is bound to the loop that opened its
connections ("attached to a different loop" on the second task). A NullPool engine avoids that
but opens a PostgreSQL connection per task (about 18x slower). So each worker process runs one
event loop in a daemon thread, owns one pooled engine used only on that loop, and points
`async_to_sync` at that loop (asgiref's `SyncToAsync.threadlocal.main_event_loop`, the same hook
it uses when called inside `sync_to_async`). Everything is created lazily per process id, so a
prefork child never reuses a loop, thread or connection from its parent. How this pool fits
with the worker's other way to PostgreSQL, and the web's and beat's, is in erp.core.db.

A soft time limit raises `SoftTimeLimitExceeded` in the waiting task thread; the coroutine is
then cancelled on the loop (its session rolls back) before the exception propagates. A
coroutine the cancel cannot reach in time (it blocks the loop) still never commits: the task
has given up, and the commit checks that first (`_RunningCall`).

PostgreSQL restarting: a service whose connection is lost before it commits (or that cannot
connect, while the server starts up) has had nothing committed, so it is run again from the
start in a new session, with back-off, for up to `WORKER_DATABASE_WAIT_SECONDS`. A service must
therefore not do work outside the database that it cannot repeat before its database work. A
connection lost during the COMMIT itself is raised: whether that commit happened is unknown.

`async def` tasks (`@celery_app.task` given a coroutine function, see erp.core.async_tasks) run
here too, with the session handed in as `session=`. Their session is the task's only one, so
the commit hooks of `erp.core.celery_app` run in it just before the commit: what a hook writes
(the run ledger's record of a periodic run's success) commits together with the task's work,
or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import uvloop
from asgiref.sync import SyncToAsync, async_to_sync
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from erp.core.config import get_settings
from erp.core.db import create_async_db_engine, ping_idle_connections
from erp.core.errors import error_text
from erp.core.retries import is_transient

logger = logging.getLogger(__name__)

R = TypeVar("R")

# One task runs at a time in a prefork child; the spare connection covers a cancelled task
# whose connection is still being returned while the next task starts.
POOL_SIZE = 1
MAX_OVERFLOW = 1
# How long a cancelled coroutine may take to roll back before the task gives up waiting.
CANCEL_GRACE_SECONDS = 5.0


class _ProcessLoop:
    """An event loop in a daemon thread, with the engine and session factory bound to it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="erp-bridge-loop", daemon=True)
        self.thread.start()
        self.engine: AsyncEngine = create_async_db_engine("erp-worker", pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
        ping_idle_connections(self.engine)
        self.session_factory = async_sessionmaker(self.engine, expire_on_commit=False)

    def stop(self) -> None:
        """Close the pool's connections on the loop that opened them, then stop the loop."""
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.engine.dispose(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


_process_loop: _ProcessLoop | None = None
_process_loop_lock = threading.Lock()


def _current_process_loop() -> _ProcessLoop:
    global _process_loop
    if _process_loop is None or _process_loop.pid != os.getpid():
        with _process_loop_lock:
            if _process_loop is None or _process_loop.pid != os.getpid():
                # A loop inherited through fork has no thread running it: start a new one.
                _process_loop = _ProcessLoop()
    return _process_loop


def shutdown_bridge() -> None:
    """Release this process's loop and connections (worker child shutdown, tests)."""
    global _process_loop
    with _process_loop_lock:
        if _process_loop is not None and _process_loop.pid == os.getpid():
            _process_loop.stop()
        _process_loop = None


class ServiceAbandoned(Exception):
    """The task gave up (a time limit) before its service finished: the work is rolled back."""


# Set while a service runs; a run_service call that sees it is nested inside another.
_inside_service: ContextVar[bool] = ContextVar("erp_inside_service", default=False)
# What the running service left to do in the calling thread once it has ended (see after_service).
_after_service: ContextVar[list[Callable[[], object]] | None] = ContextVar("erp_after_service", default=None)


def inside_service() -> bool:
    """Whether the caller runs inside a service that run_service is awaiting (on the bridge's
    loop, or in a thread that service started): where run_service may not be called again."""
    return _inside_service.get()


def after_service(action: Callable[[], object]) -> None:
    """Call `action()` in the thread that called run_service, once the running service has ended.

    Eager mode (erp.core.eager) runs a task queued from inside a service here: the task's own
    run_service would be nested in the service's, and would wait on the loop the service holds.
    Called outside a service, it raises: there is nothing to wait for.
    """
    pending = _after_service.get()
    if pending is None or not _inside_service.get():
        raise RuntimeError("after_service is for code running inside a service (run_service)")
    pending.append(action)


class _RunningCall:
    """One service call, shared by the task thread and the loop.

    The task thread may give up (a soft time limit raises in it) while the coroutine runs on the
    loop. Giving up and starting the commit exclude each other (`abandon` / `start_commit`, under
    one lock), so a session whose task has given up never commits, even when the coroutine could
    not be cancelled in time (a blocking call inside it keeps the loop from running the cancel).
    """

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.finished = threading.Event()
        self.result: Any = None
        self.committed = False
        self._lock = threading.Lock()
        self._abandoned = False
        self._committing = False

    def start_commit(self) -> bool:
        """On the loop, before COMMIT: False if the task has given up (roll back instead)."""
        with self._lock:
            if not self._abandoned:
                self._committing = True
            return self._committing

    @property
    def commit_started(self) -> bool:
        return self._committing

    def abandon(self) -> bool:
        """In the task thread: True if no commit can happen any more; False if it had started."""
        with self._lock:
            if not self._committing:
                self._abandoned = True
            return self._abandoned


# Runs in the task's session just before its commit (async def tasks only).
BeforeCommit = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class TaskBody:
    """The run of an async def task whose coroutine the loop is about to await.

    Celery keeps the current task and its request per thread, and the coroutine runs on the
    loop's thread: they are pushed there for its duration, so `self.request`, `update_state`
    and `current_task` work inside it as in a synchronous task. One task runs at a time in a
    prefork child (or solo worker), so nothing else on the loop sees them.
    """

    task: Any
    request: Any
    before_commit: BeforeCommit | None

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        from celery._state import _task_stack

        _task_stack.push(self.task)
        self.task.request_stack.push(self.request)
        try:
            yield
        finally:
            self.task.request_stack.pop()
            _task_stack.pop()


async def _call_in_session(
    session_factory: async_sessionmaker[AsyncSession],
    running: _RunningCall,
    fn: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    body: TaskBody | None = None,
) -> R:
    running.task = asyncio.current_task()
    # Reset on the way out: asgiref copies the coroutine's context back to the calling thread.
    inside = _inside_service.set(True)
    try:
        # The first attempt outside tenacity: building its retry state costs more than the
        # one-query task itself, and almost every call succeeds at once.
        try:
            return await _attempt(session_factory, running, fn, args, kwargs, body)
        except Exception as error:
            if not _may_run_again(running, error):
                raise
            _log_reconnect(fn, error, attempt=1)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda error: _may_run_again(running, error)),
            stop=stop_after_delay(get_settings().WORKER_DATABASE_WAIT_SECONDS),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            before_sleep=lambda state: (
                _log_reconnect(fn, state.outcome.exception(), attempt=state.attempt_number + 1)
                if state.outcome is not None
                else None
            ),
            reraise=True,
        ):
            with attempt:
                return await _attempt(session_factory, running, fn, args, kwargs, body)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
    finally:
        _inside_service.reset(inside)
        running.finished.set()


async def _attempt(
    session_factory: async_sessionmaker[AsyncSession],
    running: _RunningCall,
    fn: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    body: TaskBody | None,
) -> R:
    """One run of the service in a fresh session: committed if it returns, rolled back if not."""
    with body.entered() if body is not None else contextlib.nullcontext():
        async with session_factory() as session:
            result = await fn(*args, session=session, **kwargs)
            if body is not None and body.before_commit is not None:
                await body.before_commit(session)
            if not running.start_commit():
                raise ServiceAbandoned(f"{_name(fn)} finished after its task gave up; its work is rolled back")
            await session.commit()
            running.result, running.committed = result, True
            return result
        # Leaving the block without commit (an exception, a cancellation) rolls back.


def _may_run_again(running: _RunningCall, error: BaseException) -> bool:
    """Nothing was committed when the connection went before the commit began."""
    return not running.commit_started and is_transient(error)


def _log_reconnect(fn: Callable[..., Any], error: BaseException | None, *, attempt: int) -> None:
    logger.warning(
        "worker: %s lost its PostgreSQL connection before committing (%s); running it again in a new session",
        _name(fn),
        error_text(error) if error is not None else "no error",
        extra={"action": "service_reconnect", "attempt": attempt},
    )


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def run_service(fn: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any) -> R:
    """Await `fn(*args, session=..., **kwargs)` from synchronous code, in a fresh session.

    Not nestable: a service that needs another service awaits it with its own session. A nested
    call would hold a second pooled connection while waiting on the first (the pool has two).
    """
    return run_task_body(fn, args, kwargs, None)


def run_task_body(
    fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: dict[str, Any], body: TaskBody | None
) -> R:
    """`run_service` for the coroutine of an async def task (erp.core.async_tasks), whose
    `body` is re-entered on the loop and whose commit hooks run before the commit."""
    if _inside_service.get():
        raise RuntimeError(
            f"run_service cannot be nested (called for {_name(fn)} inside another service): "
            "await the service function directly and pass it the session you have"
        )
    # The list is shared with the service's copy of this context (asgiref copies it to the loop).
    pending: list[Callable[[], object]] = []
    pending_token = _after_service.set(pending)
    try:
        return _await_on_process_loop(fn, args, kwargs, body)
    finally:
        _after_service.reset(pending_token)
        # The service has ended, committed or rolled back; its session and connection are free.
        for action in pending:
            action()


def _await_on_process_loop(
    fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: dict[str, Any], body: TaskBody | None
) -> R:
    process_loop = _current_process_loop()
    # Point async_to_sync at this process's loop instead of a new loop per call.
    SyncToAsync.threadlocal.main_event_loop = process_loop.loop
    SyncToAsync.threadlocal.main_event_loop_pid = process_loop.pid
    running = _RunningCall()
    try:
        return async_to_sync(_call_in_session)(process_loop.session_factory, running, fn, args, kwargs, body)
    except BaseException as interruption:
        # SoftTimeLimitExceeded (or any signal-raised exception) interrupts only the waiting
        # thread; stop the coroutine too, so it does not run on after the task has ended.
        if running.abandon():
            if not running.finished.is_set() and running.task is not None:
                process_loop.loop.call_soon_threadsafe(running.task.cancel)
                running.finished.wait(CANCEL_GRACE_SECONDS)
            raise
        # The interruption came while the work was being committed: it is done, not abandoned.
        running.finished.wait(CANCEL_GRACE_SECONDS)
        if running.committed and isinstance(interruption, Exception):
            return cast(R, running.result)
        raise


@functools.cache
def _side_engine(pid: int) -> AsyncEngine:
    return create_async_db_engine("erp-worker", poolclass=NullPool)


@contextlib.asynccontextmanager
async def side_connection() -> AsyncIterator[AsyncConnection]:
    """A connection of its own beside the task's session, outside any transaction (autocommit),
    for a service that reads while its session writes: the sales-order import reads its file a
    piece at a time while a chunk is being written.

    Not from the pool: the pool is sized for one session per task (two connections per process),
    and two imports run side by side in one process (the threads pool, tests) would each hold
    one and wait for a second until the pool's timeout. Opened from this process's unpooled
    engine, on the loop of the service that asks: a few milliseconds, once per import.
    """
    async with _side_engine(os.getpid()).connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")
