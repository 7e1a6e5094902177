"""`/console`: the operator console's pages, server-rendered from the services the API uses.

Every page and form follows the API's rules (erp.accounts): the session cookie is an API token
authenticated as a bearer token would be, schedules and the ledger are for superusers, and a
change goes through the same service function as its API route, so it is validated, versioned
and written to the change log as the signed-in user's. Each request reads its form (if any)
first, then takes one pooled connection, renders in memory and returns it before the first
byte is sent: no connection waits on a client.

Live regions (`data-live` in the pages) are fragments of the same templates; the browser asks
for them again while the tab is visible, with the ETag it holds, and gets 304 with no body when
nothing changed. Static files are vendored under a URL with their content's digest, cached for a
year. Pages carry a strict Content-Security-Policy: no inline script or style, nothing from
another origin.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException

from erp.accounts.service import AuthenticationError
from erp.console import editing, markup, views
from erp.console import session as sessions
from erp.console.session import BadForm, ConsoleUser, Form, Refused, SignInRequired
from erp.core.db import web_session_factory
from erp.core.errors import ConflictError, InvalidInputError, NotFoundError
from erp.tasks.api import periodic_tasks
from erp.tasks.api.backfill import plan_backfill
from erp.tasks.api.periodic_tasks_router import send_run
from erp.tasks.api.periodic_tasks_schemas import PauseIn
from erp.tasks.calendar.kinds import INTERVAL_PERIODS, MISFIRE_POLICIES, SOLAR_EVENTS
from erp.tasks.ledger_kinds import ALERT_KINDS, OVERLAP_POLICIES, RUN_STATES, SKIP_REASONS
from erp.tasks.scheduler_models import PeriodicTaskDB

logger = logging.getLogger(__name__)

PACKAGE = Path(__file__).parent
STATIC_FILES = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Nothing inline, nothing from elsewhere: a page can run only the console's own script.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LIVE_HEADER = "x-console-live"
# What a redirect after a change says; only these words are shown, never text from the URL.
DONE_MESSAGES = {
    "paused": "Paused. Beat records its occurrences as skipped (paused) until it is resumed.",
    "resumed": "Resumed. The next occurrence is sent again.",
    "enabled": "Enabled. Its next run is computed from now on.",
    "disabled": "Disabled. Beat sends nothing for it until it is enabled again.",
    "run": "Sent one run now; it appears in the runs below.",
    "deleted": "Deleted. Its runs and its change log stay readable in the ledger.",
    "created": "Created. Beat picks it up at once; its first run is below.",
    "saved": "Saved. Beat picks the change up at once.",
}
_ID = re.compile(r"^[0-9]{1,18}$")

router = APIRouter(prefix="/console", include_in_schema=False)
API_PREFIX = "/api/v1/admin/periodic-tasks"


# --- templates and static files ------------------------------------------------------------


@functools.cache
def static_version() -> str:
    """A digest of the static files: a new release's files get a new URL, so browsers may keep
    each version for a year."""
    digest = hashlib.sha256()
    for name in sorted(STATIC_FILES):
        digest.update((PACKAGE / "static" / name).read_bytes())
    return digest.hexdigest()[:12]


def static_url(name: str) -> str:
    return f"/console/static/{static_version()}/{name}"


@functools.cache
def templates() -> Jinja2Templates:
    """The console's templates: autoescaped (every value is escaped unless marked safe by the
    code that made it, like the sparkline's SVG), and strict about undefined names."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["static_url"] = static_url
    environment.globals["minute_link"] = views.minute_link
    environment.globals.update(markup.GLOBALS)
    environment.filters.update(markup.FILTERS)
    return Jinja2Templates(env=environment)


def render_region(name: str, context: dict[str, Any]) -> tuple[Markup, str]:
    """A live region's HTML and its ETag (the same whether rendered in a page or alone)."""
    html = templates().get_template(f"regions/{name}.html").render(context)
    return Markup(html), f'W/"{hashlib.sha256(html.encode()).hexdigest()[:20]}"'


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    response = templates().TemplateResponse(request, template, context, status_code=status_code)
    return _secure(response)


def _region_response(request: Request, name: str, context: dict[str, Any]) -> Response:
    html, etag = render_region(name, context)
    held = {tag.strip() for tag in request.headers.get("if-none-match", "").split(",")}
    if etag in held:
        return _secure(Response(status_code=304, headers={"ETag": etag}))
    return _secure(Response(str(html), media_type="text/html; charset=utf-8", headers={"ETag": etag}))


@router.get("/static/{version}/{name}")
async def static_file(version: str, name: str) -> Response:
    if name not in STATIC_FILES:
        return _secure(Response("not found", status_code=404, media_type="text/plain"))
    body = (PACKAGE / "static" / name).read_bytes()
    # An old page after a deploy still gets the file, but only the current URL is cached for long.
    cache = "public, max-age=31536000, immutable" if version == static_version() else "no-cache"
    return _secure(Response(body, media_type=STATIC_FILES[name], headers={"Cache-Control": cache}))


# --- pages behind the session -----------------------------------------------------------------

Build = Callable[[ConsoleUser, AsyncSession], Awaitable[Response]]


def _error_page(request: Request, status_code: int, message: str, user: ConsoleUser | None = None) -> Response:
    context = {"user": user, "message": message, "status_code": status_code, "health_html": None}
    return _page(request, "error.html", context, status_code)


async def signed_in(request: Request, respond: Callable[[ConsoleUser], Awaitable[Response]]) -> Response:
    """Authenticate the session, then respond; a missing session is sent to sign in (a live
    region gets 401), and a refusal, a missing thing or the API's 429/503 become the console's
    error page."""
    user: ConsoleUser | None = None
    try:
        user = await sessions.current_user(request)
        return await respond(user)
    except SignInRequired as error:
        if request.headers.get(LIVE_HEADER):
            return _secure(Response(str(error), status_code=401, media_type="text/plain"))
        # After signing in, back to the page (a form's own page: its POST is not repeated).
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = request.url.path.rsplit("/", 1)[0]
        return _secure(RedirectResponse(f"/console/login?{urlencode({'next': target})}", status_code=303))
    except Refused as error:
        return _error_page(request, error.status_code, str(error), user)
    except NotFoundError as error:
        return _error_page(request, 404, str(error), user)
    except InvalidInputError as error:  # e.g. a page's cursor that no page made
        return _error_page(request, 422, str(error), user)
    except HTTPException as error:  # the API's limits (429) and a broker or Redis away (503)
        response = _error_page(request, error.status_code, str(error.detail), user)
        response.headers.update(error.headers or {})
        return response


async def _superuser(request: Request, build: Build, form: Form | None = None, members: str | None = None) -> Response:
    """Apply the API's superuser rule to the signed-in user (`members`: where anyone else is
    sent instead of being refused), check a form's token, then build the response with one
    session that is closed before the response is returned."""

    async def respond(user: ConsoleUser) -> Response:
        if members is not None and not user.caller.is_superuser:
            return _secure(RedirectResponse(members, status_code=303))
        sessions.require_superuser(user)
        if form is not None:
            sessions.check_form(request, form, user)
        async with web_session_factory()() as session:
            return await build(user, session)

    return await signed_in(request, respond)


# The health strip arrives as its own request, right after the page: counting the last hour of
# the ledger reads every occurrence of that hour (500,000 rows at 100,000 schedules every ten
# minutes took 0.3 s), and no page should wait for it (scripts/bench_console).
HEALTH_PENDING = Markup('<p class="muted">Reading beats, the ledger, workers and queues…</p>')


def _frame(user: ConsoleUser, **context: Any) -> dict[str, Any]:
    """What every page has: the user (and their forms' token) and the health strip's place,
    which the page's script fills at once (a region without an ETag is asked for on load)."""
    return {"user": user, "health_html": HEALTH_PENDING, "health_etag": "", **context}


@router.get("/live/health")
async def live_health(request: Request) -> Response:
    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        return _region_response(request, "health", {"health": await views.health(session=session)})

    return await _superuser(request, build)


@router.get("")
async def overview(request: Request) -> Response:
    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        region = request.query_params.get("region")
        if region == "activity":
            return _region_response(request, "activity", {"activity": await views.activity(session=session)})
        context = {"attention": await views.attention(session=session)}
        if region == "attention":
            return _region_response(request, "attention", context)
        attention_html, attention_etag = render_region("attention", context)
        activity_html, activity_etag = render_region("activity", {"activity": await views.activity(session=session)})
        frame = _frame(
            user,
            attention_html=attention_html,
            attention_etag=attention_etag,
            activity_html=activity_html,
            activity_etag=activity_etag,
        )
        return _page(request, "overview.html", frame)

    # The landing page: members land on their organization's work instead.
    return await _superuser(request, build, members="/console/work")


def _schedule_filter(request: Request) -> views.ScheduleFilter:
    params = request.query_params
    status = params.get("status", "")
    after = params.get("after", "")
    return views.ScheduleFilter(
        q=params.get("q", "").replace("\x00", "")[:200],
        task=params.get("task", "").replace("\x00", "")[:200],
        status=status if status in views.SCHEDULE_STATUSES else "",
        after=int(after) if _ID.match(after) else None,
    )


@router.get("/schedules")
async def schedules(request: Request) -> Response:
    filters = _schedule_filter(request)

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        page = await views.schedules_page(filters, session=session)
        live_url = f"/console/schedules?{urlencode(filters.query(after=filters.after, region='table'))}"
        context = {
            "page": page,
            "filters": filters,
            "statuses": views.SCHEDULE_STATUSES,
            "live_url": live_url,
            "message": DONE_MESSAGES.get(request.query_params.get("done", "")) or _bulk_message(request.query_params),
            "back": f"/console/schedules?{urlencode(filters.query(after=filters.after))}",
        }
        if request.query_params.get("region") == "table":
            return _region_response(request, "schedules_table", context)
        table_html, table_etag = render_region("schedules_table", context)
        frame = _frame(user, **context, table_html=table_html, table_etag=table_etag)
        return _page(request, "schedules.html", frame)

    return await _superuser(request, build)


def _why_at(request: Request) -> tuple[datetime | None, str | None]:
    """The moment of "why didn't it run at T?" (a local time of the form is read as UTC)."""
    text = request.query_params.get("at", "").strip()
    if not text:
        return None, None
    moment = views.parse_moment(text)
    if moment is None:
        return (
            None,
            f"{text[:40]!r} is not a time from 1970 to 2999: write it like 2030-01-01T09:00 (UTC) or with an offset",
        )
    return moment, None


async def _schedule_page(
    request: Request,
    user: ConsoleUser,
    session: AsyncSession,
    periodic_task_id: int,
    *,
    message: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    why_at, why_error = _why_at(request)
    detail = await views.schedule_detail(periodic_task_id, session=session, why_at=why_at)
    params = request.query_params
    if "backfill_from" in params or "backfill_to" in params:
        start, end = (
            views.parse_moment(params.get("backfill_from", "")),
            views.parse_moment(params.get("backfill_to", "")),
        )
        if start is None or end is None or end <= start:
            why_error = why_error or "A backfill needs a range: from and to, UTC, to after from"
        else:
            detail.backfill = await views.backfill_dry_run(periodic_task_id, start, end, session=session)
    status_html, status_etag = render_region("schedule_status", {"row": detail.row, "user": user})
    runs_html, runs_etag = render_region(
        "schedule_runs", {"runs": detail.runs, "more_runs": detail.more_runs, "timeline": detail.timeline}
    )
    done = request.query_params.get("done", "")
    frame = _frame(
        user,
        detail=detail,
        row=detail.row,
        status_html=status_html,
        status_etag=status_etag,
        runs_html=runs_html,
        runs_etag=runs_etag,
        message=message or DONE_MESSAGES.get(done) or _counted_message(params),
        error=error or why_error,
        why_at=request.query_params.get("at", "")[:40],
    )
    return _page(request, "schedule.html", frame, status_code)


# --- a new schedule: the API's schema and service, a preview from the calendar -------------------


def _new_schedule_page(
    request: Request,
    user: ConsoleUser,
    frame: dict[str, Any],
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
    *,
    task: PeriodicTaskDB | None = None,
    version: int | None = None,
) -> Response:
    """The schedule form: a new one, or (with `task`) a change to one, at the version it showed."""
    shown = editing.preview(values)
    preview_html, preview_etag = render_region("schedule_preview", {"preview": shown})
    context = {
        **frame,
        "task": task,
        "version": version,
        "form_action": "/console/schedules/new" if task is None else f"/console/schedules/{task.id}/edit",
        "values": values,
        "errors": errors,
        "task_names": periodic_tasks.registered_task_names(),
        "periods": INTERVAL_PERIODS,
        "solar_events": SOLAR_EVENTS,
        "runs": editing.RUNS,
        "misfire_policies": MISFIRE_POLICIES,
        "overlap_policies": OVERLAP_POLICIES,
        "preview_html": preview_html,
        "preview_etag": preview_etag,
    }
    return _page(request, "new_schedule.html", context, status_code)


@router.get("/schedules/new")
async def new_schedule(request: Request) -> Response:
    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        values = editing.form_values(request.query_params)
        return _new_schedule_page(request, user, _frame(user), values, {})

    return await _superuser(request, build)


@router.get("/schedules/new/preview")
async def new_schedule_preview(request: Request) -> Response:
    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        shown = editing.preview(editing.form_values(request.query_params))
        return _region_response(request, "schedule_preview", {"preview": shown})

    return await _superuser(request, build)


@router.post("/schedules/new")
async def create_schedule(request: Request) -> Response:
    try:
        form = await sessions.read_form(request)
    except BadForm as error:
        return _error_page(request, error.status_code, str(error))

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        values = editing.form_values(form)
        data, errors = editing.validated(values)
        if data is not None:
            try:
                task = await periodic_tasks.create_periodic_task(data, user.caller, session=session)
            except periodic_tasks.PeriodicTaskConflict as error:
                await session.rollback()
                errors = {"name": str(error)}
            except InvalidInputError as error:
                await session.rollback()
                errors = {editing.service_error_field(str(error)): str(error)}
            else:
                logger.info(
                    "console: %s created periodic task %s",
                    user.caller.email,
                    task.id,
                    extra={"action": "console.create", "periodic_task_id": task.id},
                )
                return _secure(RedirectResponse(f"/console/schedules/{task.id}?done=created", status_code=303))
        status_code = 409 if "already exists" in errors.get("name", "") else 422
        return _new_schedule_page(request, user, _frame(user), values, errors, status_code)

    return await _superuser(request, build, form)


async def _editable(periodic_task_id: str, session: AsyncSession) -> tuple[PeriodicTaskDB, dict[str, str]]:
    if not _ID.match(periodic_task_id):
        raise NotFoundError(f"periodic task {periodic_task_id[:20]!r} does not exist")
    task = await periodic_tasks.get_periodic_task(int(periodic_task_id), session=session)
    values = editing.values_of(task)
    if values is None:
        raise Refused(f"its schedule cannot be read: mend it through the API (PATCH {API_PREFIX}/{task.id})", 422)
    return task, values


@router.get("/schedules/{periodic_task_id}/edit")
async def edit_schedule(request: Request, periodic_task_id: str) -> Response:
    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        task, values = await _editable(periodic_task_id, session)
        frame = _frame(user)
        return _new_schedule_page(request, user, frame, values, {}, task=task, version=task.version)

    return await _superuser(request, build)


@router.post("/schedules/{periodic_task_id}/edit")
async def change_schedule_fields(request: Request, periodic_task_id: str) -> Response:
    """A change through the API's schema and service, at the version the form showed: if
    someone changed the schedule since, nothing is saved and the form says so (409)."""
    try:
        form = await sessions.read_form(request)
    except BadForm as error:
        return _error_page(request, error.status_code, str(error))

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        task, saved = await _editable(periodic_task_id, session)
        task_id = task.id  # the row expires when a refused change is rolled back
        values = editing.form_values(form, saved)
        version = form.get("version", "")
        expected = int(version) if version.isdigit() and len(version) < 10 else -1
        data, errors = editing.validated_update(values, task)
        status_code = 422
        if data is not None:
            try:
                await periodic_tasks.update_periodic_task(task_id, data, expected, user.caller, session=session)
            except periodic_tasks.PeriodicTaskConflict as error:
                await session.rollback()
                status_code = 409
                errors = {"form": f"Not saved: {error}"}
            except InvalidInputError as error:
                await session.rollback()
                errors = {editing.service_error_field(str(error)): str(error)}
            else:
                logger.info(
                    "console: %s changed periodic task %s",
                    user.caller.email,
                    task_id,
                    extra={"action": "console.update", "periodic_task_id": task_id},
                )
                return _secure(RedirectResponse(f"/console/schedules/{task_id}?done=saved", status_code=303))
        task = await periodic_tasks.get_periodic_task(task_id, session=session)
        frame = _frame(user)
        return _new_schedule_page(
            request, user, frame, values, errors, status_code, task=task, version=expected if expected >= 0 else None
        )

    return await _superuser(request, build, form)


@router.get("/schedules/{periodic_task_id}")
async def schedule(request: Request, periodic_task_id: str) -> Response:
    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        if not _ID.match(periodic_task_id):
            raise NotFoundError(f"periodic task {periodic_task_id[:20]!r} does not exist")
        task_id = int(periodic_task_id)
        region = request.query_params.get("region")
        if region == "status":
            return _region_response(
                request, "schedule_status", {"row": await views.schedule_status(task_id, session=session), "user": user}
            )
        if region == "runs":
            return _region_response(
                request, "schedule_runs", await views.schedule_runs_region(task_id, session=session)
            )
        return await _schedule_page(request, user, session, task_id)

    return await _superuser(request, build)


# --- changes: the same service functions as the API's routes ----------------------------------

ACTIONS = ("run", "pause", "resume", "enable", "disable", "delete", "backfill")


async def _backfill(request: Request, user: ConsoleUser, session: AsyncSession, task_id: int, form: Form) -> Response:
    """Plan the range the dry run showed (the API's backfill: slots already held are left alone)."""
    start, end = views.parse_moment(form.get("from", "")), views.parse_moment(form.get("to", ""))
    if start is None or end is None or end <= start:
        return await _schedule_page(request, user, session, task_id, error="A backfill needs a range", status_code=422)
    try:
        result = await plan_backfill(task_id, start, end, session=session)
    except InvalidInputError as error:
        await session.rollback()
        return await _schedule_page(request, user, session, task_id, error=str(error), status_code=422)
    logger.info(
        "console: %s backfilled periodic task %s: %d planned",
        user.caller.email,
        task_id,
        result.planned,
        extra={"action": "console.backfill", "periodic_task_id": task_id},
    )
    outcome = urlencode({"done": "backfilled", "n": result.planned, "skipped": result.already_recorded})
    return _secure(RedirectResponse(f"/console/schedules/{task_id}?{outcome}", status_code=303))


class NotSent(Exception):
    """Run now: the broker did not take the message (the ledger row says revoked)."""


async def _apply(action: str, periodic_task_id: int, form: Form, user: ConsoleUser, session: AsyncSession) -> str:
    caller = user.caller
    if action == "pause":
        note = PauseIn.model_validate({"note": form.get("note", "")}).note
        await periodic_tasks.pause_periodic_task(periodic_task_id, note, caller, session=session)
        return "paused"
    if action == "resume":
        await periodic_tasks.resume_periodic_task(periodic_task_id, caller, session=session)
        return "resumed"
    if action in ("enable", "disable"):
        await periodic_tasks.set_enabled(periodic_task_id, action == "enable", caller, session=session)
        return f"{action}d"
    if action == "delete":
        version = form.get("version", "")
        expected = int(version) if version.isdigit() and len(version) < 10 else None
        await periodic_tasks.delete_periodic_task(periodic_task_id, expected, caller, session=session)
        return "deleted"
    try:
        await periodic_tasks.run_periodic_task_now(periodic_task_id, caller, send_run, session=session)
    except (NotFoundError, ConflictError, InvalidInputError):
        raise
    except Exception as error:  # the broker's error, whatever its kind: reported as not sent
        raise NotSent(type(error).__name__) from error
    return "run"


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "input"
    return f"{field}: {first['msg']}"


@router.post("/schedules/{periodic_task_id}/{action}")
async def change_schedule(request: Request, periodic_task_id: str, action: str) -> Response:
    try:
        form = await sessions.read_form(request)
    except BadForm as error:
        return _error_page(request, error.status_code, str(error))

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        if action not in ACTIONS or not _ID.match(periodic_task_id):
            raise NotFoundError("no such page")
        task_id = int(periodic_task_id)
        if action == "backfill":
            return await _backfill(request, user, session, task_id, form)
        try:
            done = await _apply(action, task_id, form, user, session)
        except ValidationError as error:
            await session.rollback()
            message = f"Not paused: {_validation_message(error)} (a pause needs a note saying why)"
            return await _schedule_page(request, user, session, task_id, error=message, status_code=422)
        except (ConflictError, InvalidInputError) as error:
            await session.rollback()
            status_code = 409 if isinstance(error, ConflictError) else 422
            return await _schedule_page(request, user, session, task_id, error=str(error), status_code=status_code)
        except NotSent as error:
            await session.rollback()
            logger.warning(
                "console: run now of periodic task %s not sent: %s",
                task_id,
                error,
                extra={"action": "console.run_not_sent"},
            )
            message = f"Not sent: the broker did not take the message ({error}); try again"
            return await _schedule_page(request, user, session, task_id, error=message, status_code=503)
        logger.info(
            "console: %s %s periodic task %s",
            user.caller.email,
            done,
            task_id,
            extra={"action": f"console.{action}", "periodic_task_id": task_id},
        )
        if done == "deleted":
            return _secure(RedirectResponse("/console/schedules?done=deleted", status_code=303))
        return _secure(RedirectResponse(f"/console/schedules/{task_id}?done={done}", status_code=303))

    return await _superuser(request, build, form)


BULK_ACTIONS = ("pause", "resume")


@router.post("/schedules/bulk")
async def change_schedules(request: Request) -> Response:
    """Pause (with one note) or resume the schedules ticked on the schedules page, each through
    the API's service function: each its own change record, as if paused one by one. Those
    already in that state are counted, not an error."""
    try:
        form = await sessions.read_form(request)
    except BadForm as error:
        return _error_page(request, error.status_code, str(error))

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        action = form.get("action", "")
        ids = sorted({int(value) for value in form.getlist("id") if _ID.match(value)})
        back = sessions.safe_next(form.get("back"))
        if not back.startswith("/console/schedules?"):
            back = "/console/schedules?"
        if action not in BULK_ACTIONS or not ids:
            return _error_page(request, 422, "tick one or more schedules, then Pause or Resume", user)
        note = ""
        if action == "pause":
            try:
                note = PauseIn.model_validate({"note": form.get("note", "")}).note
            except ValidationError as error:
                return _error_page(
                    request, 422, f"Not paused: {_validation_message(error)} (a pause needs a note)", user
                )
        changed = unchanged = 0
        for task_id in ids:
            try:
                if action == "pause":
                    await periodic_tasks.pause_periodic_task(task_id, note, user.caller, session=session)
                else:
                    await periodic_tasks.resume_periodic_task(task_id, user.caller, session=session)
                changed += 1
            except (periodic_tasks.PauseConflict, periodic_tasks.PeriodicTaskNotFound):
                await session.rollback()
                unchanged += 1
        logger.info(
            "console: %s bulk-%s %d periodic tasks (%d unchanged)",
            user.caller.email,
            action,
            changed,
            unchanged,
            extra={"action": f"console.bulk_{action}", "changed": changed, "unchanged": unchanged},
        )
        outcome = urlencode({"done": f"bulk-{action}", "n": changed, "skipped": unchanged})
        return _secure(RedirectResponse(f"{back}{'&' if back[-1] != '?' else ''}{outcome}", status_code=303))

    return await _superuser(request, build, form)


def _counted_message(params: Any) -> str | None:
    """What a redirect after a counted change says (numbers only are taken from the URL)."""
    done, planned, held = params.get("done", ""), params.get("n", ""), params.get("skipped", "")
    if not (planned.isdigit() and held.isdigit() and len(planned) < 10 and len(held) < 10):
        return None
    if done == "backfilled":
        return f"Backfill planned {int(planned)} occurrences; {int(held)} the ledger already held were left alone."
    return _bulk_message(params)


def _bulk_message(params: Any) -> str | None:
    done = params.get("done", "")
    changed, unchanged = params.get("n", ""), params.get("skipped", "")
    if done not in ("bulk-pause", "bulk-resume") or not (changed.isdigit() and unchanged.isdigit()):
        return None
    verb = "Paused" if done == "bulk-pause" else "Resumed"
    state = "paused" if done == "bulk-pause" else "not paused"
    tail = f"; {int(unchanged)} already {state} or gone" if int(unchanged) else ""
    return f"{verb} {int(changed)} schedule{'s' if int(changed) != 1 else ''}{tail}."


# --- runs across schedules ----------------------------------------------------------------------


@router.get("/runs")
async def runs(request: Request) -> Response:
    filters = views.runs_filter_from(request.query_params)

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        page = await views.runs_page(filters, session=session)
        before = None if filters.before is None else filters.before.text()
        live_url = f"/console/runs?{urlencode(filters.query(before=before, region='table'))}"
        context = {
            "page": page,
            "filters": filters,
            "states": RUN_STATES,
            "skip_reasons": SKIP_REASONS,
            "live_url": live_url,
            "next_url": None
            if page.next_before is None
            else f"/console/runs?{urlencode(filters.query(before=page.next_before))}",
        }
        if request.query_params.get("region") == "table":
            return _region_response(request, "runs_table", context)
        table_html, table_etag = render_region("runs_table", context)
        frame = _frame(user, **context, table_html=table_html, table_etag=table_etag)
        return _page(request, "runs.html", frame)

    return await _superuser(request, build)


# --- the load forecast and the alerts -------------------------------------------------------------


@router.get("/load")
async def load(request: Request) -> Response:
    minute = views.parse_moment(request.query_params.get("minute", ""))

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        shown = await views.load(session=session, minute=minute)
        return _page(request, "load.html", _frame(user, load=shown))

    return await _superuser(request, build)


@router.get("/alerts")
async def alerts(request: Request) -> Response:
    filters = views.alerts_filter_from(request.query_params)

    async def build(user: ConsoleUser, session: AsyncSession) -> Response:
        rows, more = await views.alerts_page(filters, session=session)
        context = {"alerts": rows, "more": more, "filters": filters, "kinds": ALERT_KINDS}
        if request.query_params.get("region") == "table":
            return _region_response(request, "alerts_table", context)
        table_html, table_etag = render_region("alerts_table", context)
        live_url = f"/console/alerts?{urlencode(_alerts_query(filters))}"
        frame = _frame(user, **context, table_html=table_html, table_etag=table_etag, live_url=live_url)
        return _page(request, "alerts.html", frame)

    return await _superuser(request, build)


def _alerts_query(filters: views.AlertsFilter) -> dict[str, str]:
    query = {"region": "table"}
    if filters.delivered is not None:
        query["delivered"] = "yes" if filters.delivered else "no"
    if filters.kind is not None:
        query["kind"] = filters.kind
    return query


# --- signing in and out ---------------------------------------------------------------------------


def _login_response(request: Request, target: str, *, error: str | None = None, status_code: int = 200) -> Response:
    """The login form, with a fresh double-submit token in its cookie and in the form."""
    token = sessions.new_login_token()
    context = {"user": None, "health_html": None, "error": error, "csrf": token, "next": target}
    page = templates().get_template("login.html").render(context)
    response = Response(page, media_type="text/html; charset=utf-8", status_code=status_code)
    sessions.set_login_cookie(response, request, token)
    return _secure(response)


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_response(request, sessions.safe_next(request.query_params.get("next")))


async def _sign_in_with_form(
    request: Request,
    what: str,
    field: str,
    sign_in: Callable[[str], Awaitable[tuple[Any, str]]],
    *,
    follow_next: bool,
) -> Response:
    """The login form's and the login link's POST: the form checked, `sign_in` given its
    `field`, then the session cookie and a redirect, or the login page saying why not (401)."""
    try:
        form = await sessions.read_form(request)
        sessions.check_login_form(request, form)
    except (BadForm, Refused) as error:
        return _error_page(request, error.status_code, str(error))
    target = sessions.safe_next(form.get("next")) if follow_next else sessions.COOKIE_PATH
    try:
        _, secret = await sign_in(form.get(field, ""))
    except AuthenticationError as error:
        logger.info("console: %s refused: %s", what, error, extra={"action": "console.sign_in_refused"})
        return _login_response(request, target, error=f"Not signed in: {error}.", status_code=401)
    response = RedirectResponse(target, status_code=303)
    sessions.set_session_cookie(response, request, secret)
    return _secure(response)


@router.post("/login")
async def login(request: Request) -> Response:
    return await _sign_in_with_form(request, "sign-in", "token", sessions.sign_in, follow_next=True)


@router.get("/login/link")
async def login_link_form(request: Request) -> Response:
    """The page a login link opens: a button that signs in (a POST), so fetching the link,
    as mail and chat previews do, does not spend it."""
    code = request.query_params.get("code", "")
    try:
        owner = await sessions.login_link_owner(code)
    except AuthenticationError as error:
        return _login_response(request, sessions.COOKIE_PATH, error=f"Not signed in: {error}.", status_code=401)
    token = sessions.new_login_token()
    context = {"user": None, "health_html": None, "csrf": token, "code": code, "email": owner.email}
    page = templates().get_template("login_link.html").render(context)
    response = Response(page, media_type="text/html; charset=utf-8")
    sessions.set_login_cookie(response, request, token)
    return _secure(response)


@router.post("/login/link")
async def login_with_link(request: Request) -> Response:
    return await _sign_in_with_form(request, "login link", "code", sessions.sign_in_with_link, follow_next=False)


@router.post("/logout")
async def logout(request: Request) -> Response:
    try:
        form = await sessions.read_form(request)
    except BadForm as error:
        return _error_page(request, error.status_code, str(error))
    try:
        user = await sessions.current_user(request)
        sessions.check_form(request, form, user)
    except SignInRequired:
        return _secure(RedirectResponse("/console/login", status_code=303))
    except Refused as error:
        return _error_page(request, error.status_code, str(error))
    response = RedirectResponse("/console/login", status_code=303)
    await sessions.sign_out(request, response, user)
    return _secure(response)
