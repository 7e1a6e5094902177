"""`/console/work`: the members' pages, their organization's work: sales reports and imports.

Who sees what is the API's rule, applied by the same functions: a page of an organization is
for its members and superusers (erp.accounts.membership, as the API's organization routes);
the tasks listed are the signed-in user's own, as `GET /api/v1/tasks` lists them, each read
through erp.tasks.api.task_status; the imports are the organization's, as `GET
/api/v1/organizations/{id}/imports` lists them. A report is requested through the API's schema
and queued by the API's function, a CSV is checked, stored and queued by the API's upload path,
and the files are handed out by the API's download functions, streamed with no pooled
connection held while the browser reads.

As on the operator's pages, a request reads its form (a CSV upload: into a temporary file)
before it takes a pooled connection, and its live regions answer 304 when nothing changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import ImmutableMultiDict, UploadFile
from starlette.exceptions import HTTPException

from erp.accounts import membership
from erp.accounts import service as accounts
from erp.console import router as pages
from erp.console import session as sessions
from erp.console.session import BadForm, ConsoleUser, Refused
from erp.core.caller import Caller
from erp.core.config import get_settings
from erp.core.db import web_session_factory
from erp.core.dispatch import TaskAccepted
from erp.core.errors import NotFoundError
from erp.core.idempotency import Idempotency
from erp.core.input_types import StoredText
from erp.core.request_bodies import accepts_body_up_to
from erp.features.data_processing import downloads, submission, upload
from erp.features.data_processing.dependencies import upload_slot_for
from erp.features.data_processing.exceptions import InvalidUpload
from erp.features.data_processing.models import DataImportDB
from erp.features.data_processing.parsing import EXAMPLE_HEADER
from erp.features.data_processing.tasks import import_sales_orders
from erp.features.reports import delivery
from erp.features.reports.schemas import Grouping, ReportFormat, SalesReportRequest
from erp.features.reports.tasks import generate_sales_report
from erp.tasks.api import task_status
from erp.tasks.api.task_status import TaskStatus

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/console/work", include_in_schema=False)

TASKS_PER_PAGE = 10
IMPORTS_PER_PAGE = 10
# The failed rows an import's page shows; errors.csv has them all.
ERRORS_SHOWN = 100
REPORT_FIELDS = ("date_from", "date_to", "group_by", "format")
TASK_KINDS = {generate_sales_report.name: "Sales report", import_sales_orders.name: "Sales-order import"}
FINISHED_STATES = ("SUCCESS", "FAILURE", "REVOKED")
# A multipart form wraps the file with its boundaries, headers and the forms' token.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
UPLOAD_CHUNK_BYTES = 64 * 1024
# The upload form's fields: the token and the file (anything more is not the console's form).
MAX_UPLOAD_FORM_FIELDS = 4
DONE_MESSAGES = {
    "report": "Report requested. It appears below; its file is ready to download when it is done.",
}
# The report form's idempotency key, made when the form is rendered: a double click or a browser
# sending the POST again carries the same key, and the API's Idempotency-Key rules
# (erp.core.idempotency) then queue one report and answer the second submit with the first's task.
REPORT_KEY_FIELD = "idempotency_key"
_REPORT_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# A second submit that arrives while the first is still queuing (a double click: some
# milliseconds apart) asks again this often, for at most this long, for the first one's answer.
REPORT_KEY_POLL_SECONDS = 0.05
REPORT_KEY_WAIT_SECONDS = 5.0
_ID = re.compile(r"^[0-9]{1,18}$")
# The API's rule for an upload's name (its `filename` parameter).
_FILENAME = TypeAdapter(Annotated[StoredText, Field(min_length=1, max_length=255)])


# --- who may act in an organization ---------------------------------------------------------------


def _url_id(text: str, missing: str) -> int:
    """A database id of the URL; anything else names nothing that exists (404 saying `missing`)."""
    if not _ID.match(text):
        raise NotFoundError(missing)
    return int(text)


def _no_import(caller: Caller, import_id: str) -> str:
    return f"organization {caller.organization_id} has no data import {import_id[:20]!r}"


Respond = Callable[[ConsoleUser, Caller], Awaitable[Response]]


async def _member(request: Request, organization_id: str, respond: Respond) -> Response:
    """The signed-in user acting in the organization of the URL, as the API's organization
    routes decide it (403 for anyone but its members and superusers, 404 for none such)."""

    async def act(user: ConsoleUser) -> Response:
        number = _url_id(organization_id, f"organization {organization_id[:20]!r} does not exist")
        try:
            caller = await membership.organization_caller(user.authenticated, number)
        except membership.NotAMember as error:
            raise Refused(str(error)) from None
        return await respond(user, caller)

    return await pages.signed_in(request, act)


def _frame(user: ConsoleUser, **context: Any) -> dict[str, Any]:
    """What every members' page has: the user (and their forms' token); no operator health strip."""
    return {"user": user, "health_html": None, **context}


@router.get("")
async def choose(request: Request) -> Response:
    """A member's organization (the only one goes straight to its page), or the list to choose
    (a superuser's always: they may open any organization by its id)."""

    async def respond(user: ConsoleUser) -> Response:
        roles = user.authenticated.roles
        if len(roles) == 1 and not user.caller.is_superuser:
            return pages._secure(RedirectResponse(f"/console/work/{next(iter(roles))}", status_code=303))
        chosen = request.query_params.get("organization", "").strip()
        if _ID.match(chosen):
            return pages._secure(RedirectResponse(f"/console/work/{int(chosen)}", status_code=303))
        async with web_session_factory()() as session:
            organizations = [
                await accounts.get_organization(organization_id, session=session) for organization_id in sorted(roles)
            ]
        context = _frame(user, organizations=organizations, roles=roles)
        return pages._page(request, "work_choose.html", context)

    return await pages.signed_in(request, respond)


# --- the organization's page ------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRow:
    """A task of the list: its status as the API answers it, and what the page shows of it."""

    status: TaskStatus
    kind: str
    percent: float | None
    finished: bool
    download_path: str | None
    stage: str | None  # what the task says it is doing, if it says so ("writing")
    rows_written: int | None


def _task_row(status: TaskStatus) -> TaskRow:
    # A task's progress is whatever its meta holds: read only what is there and of its type.
    progress = status.progress or {}
    percent = progress.get("percent") if isinstance(progress.get("percent"), int | float) else None
    stage = progress.get("stage") if isinstance(progress.get("stage"), str) else None
    rows_written = progress.get("rows_written") if isinstance(progress.get("rows_written"), int) else None
    download_path = None
    result = status.result if isinstance(status.result, dict) else {}
    if status.state == "SUCCESS" and status.organization_id is not None and isinstance(result.get("file_id"), int):
        download_path = f"/console/work/{status.organization_id}/reports/files/{result['file_id']}"
    return TaskRow(
        status=status,
        kind=TASK_KINDS.get(status.task_name or "", status.task_name or "task"),
        percent=100.0 if status.state == "SUCCESS" else percent,
        finished=status.state in FINISHED_STATES,
        download_path=download_path,
        stage=stage,
        rows_written=rows_written,
    )


@dataclass(frozen=True)
class ImportRow:
    """An import of the list, with its task's progress while it runs."""

    data_import: DataImportDB
    percent: float | None


async def _import_rows(caller: Caller, found: list[DataImportDB]) -> list[ImportRow]:
    rows = []
    for data_import in found:
        percent: float | None = 100.0 if data_import.status in ("done", "failed") else None
        if data_import.status == "running" and data_import.task_id:
            # The task's progress, read as the API's task status reads it for this caller.
            try:
                progress = (await task_status.task_status(caller, data_import.task_id)).progress or {}
            except (task_status.TaskHidden, NotFoundError):
                progress = {}
            value = progress.get("percent")
            percent = float(value) if isinstance(value, int | float) else None
        rows.append(ImportRow(data_import, percent))
    return rows


async def _end_reading(session: AsyncSession) -> None:
    """Keep the rows read as they are and end the transaction: none is held while Redis is
    asked for the tasks' progress."""
    session.expunge_all()
    await session.rollback()


def _before(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value[:100] if value else None


def _page_url(organization_id: int, **params: str | None) -> str:
    query = {key: value for key, value in params.items() if value}
    return f"/console/work/{organization_id}" + (f"?{urlencode(query)}" if query else "")


async def _tasks_context(request: Request, caller: Caller) -> dict[str, Any]:
    assert caller.organization_id is not None
    before = _before(request, "tasks_before")
    page = await task_status.my_tasks(caller, TASKS_PER_PAGE, before)  # a wrong cursor: InvalidCursor, 422
    return {
        "tasks": [_task_row(status) for status in page.items],
        "organization_id": caller.organization_id,
        "tasks_live_url": _page_url(caller.organization_id, region="tasks", tasks_before=before),
        "tasks_newer_url": _page_url(caller.organization_id) if before else None,
        "tasks_older_url": None
        if page.next_before is None
        else _page_url(caller.organization_id, tasks_before=page.next_before),
    }


async def _imports_context(request: Request, caller: Caller, session: AsyncSession) -> dict[str, Any]:
    assert caller.organization_id is not None
    text = _before(request, "imports_before") or ""
    before = int(text) if _ID.match(text) else None
    found = await upload.list_imports(caller.organization_id, IMPORTS_PER_PAGE + 1, session=session, before_id=before)
    await _end_reading(session)
    next_before = str(found[IMPORTS_PER_PAGE - 1].id) if len(found) > IMPORTS_PER_PAGE else None
    return {
        "imports": await _import_rows(caller, found[:IMPORTS_PER_PAGE]),
        "organization_id": caller.organization_id,
        "imports_live_url": _page_url(
            caller.organization_id, region="imports", imports_before=None if before is None else str(before)
        ),
        "imports_newer_url": _page_url(caller.organization_id) if before is not None else None,
        "imports_older_url": None
        if next_before is None
        else _page_url(caller.organization_id, imports_before=next_before),
    }


async def _work_page(
    request: Request,
    user: ConsoleUser,
    caller: Caller,
    *,
    report_values: dict[str, str] | None = None,
    report_errors: dict[str, str] | None = None,
    upload_error: str | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    assert caller.organization_id is not None
    async with web_session_factory()() as session:
        organization = await accounts.get_organization(caller.organization_id, session=session)
        imports = await _imports_context(request, caller, session)
    tasks = await _tasks_context(request, caller)
    tasks_html, tasks_etag = pages.render_region("work_tasks", tasks)
    imports_html, imports_etag = pages.render_region("work_imports", imports)
    context = _frame(
        user,
        organization=organization,
        tasks_html=tasks_html,
        tasks_etag=tasks_etag,
        tasks_live_url=tasks["tasks_live_url"],
        imports_html=imports_html,
        imports_etag=imports_etag,
        imports_live_url=imports["imports_live_url"],
        values=report_values or {"date_from": "", "date_to": "", "group_by": "month", "format": "csv"},
        errors=report_errors or {},
        report_key=secrets.token_urlsafe(24),
        upload_error=upload_error,
        groupings=[grouping.value for grouping in Grouping],
        formats=[report_format.value for report_format in ReportFormat],
        example_header=EXAMPLE_HEADER,
        message=message or DONE_MESSAGES.get(request.query_params.get("done", "")),
        max_upload_bytes=get_settings().DATA_IMPORT_MAX_UPLOAD_BYTES,
    )
    return pages._page(request, "work.html", context, status_code)


@router.get("/{organization_id}")
async def work(request: Request, organization_id: str) -> Response:
    async def respond(user: ConsoleUser, caller: Caller) -> Response:
        region = request.query_params.get("region")
        if region == "tasks":
            return pages._region_response(request, "work_tasks", await _tasks_context(request, caller))
        if region == "imports":
            async with web_session_factory()() as session:
                context = await _imports_context(request, caller, session)
            return pages._region_response(request, "work_imports", context)
        return await _work_page(request, user, caller)

    return await _member(request, organization_id, respond)


def _with_headers_of(error: HTTPException, response: Response) -> Response:
    """The refusal's own headers (a 429's Retry-After) on the page that tells it."""
    response.headers.update(error.headers or {})
    return response


# --- a sales report --------------------------------------------------------------------------------


def _report_errors(error: ValidationError) -> dict[str, str]:
    """The schema's messages by form field, as the API's 422 names them."""
    errors: dict[str, str] = {}
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        name = location[0] if location and location[0] in REPORT_FIELDS else "form"
        errors.setdefault(name, str(item["msg"]).removeprefix("Value error, "))
    return errors


@router.post("/{organization_id}/reports")
async def request_report(request: Request, organization_id: str) -> Response:
    try:
        form = await sessions.read_form(request)
    except BadForm as error:
        return pages._error_page(request, error.status_code, str(error))

    key = form.get(REPORT_KEY_FIELD) or None  # none from a page made before the field was
    if key is not None and not _REPORT_KEY.fullmatch(key):
        return pages._error_page(request, 400, "the report form's key is not one the console made")

    async def respond(user: ConsoleUser, caller: Caller) -> Response:
        sessions.check_form(request, form, user)
        values = {name: form.get(name, "").strip()[:40] for name in REPORT_FIELDS}
        try:
            body = SalesReportRequest.model_validate({name: value for name, value in values.items() if value})
        except ValidationError as error:
            return await _work_page(
                request, user, caller, report_values=values, report_errors=_report_errors(error), status_code=422
            )
        try:
            accepted = await _queue_report_once(request, caller, body, key)
        except HTTPException as error:  # the API's limits (429), no broker (503): said at the form
            refused = await _work_page(
                request,
                user,
                caller,
                report_values=values,
                report_errors={"form": f"Not requested: {error.detail}"},
                status_code=error.status_code,
            )
            return _with_headers_of(error, refused)
        logger.info(
            "console: %s requested a sales report",
            caller.email,
            extra={"action": "console.report_requested", "organization_id": caller.organization_id},
        )
        target = f"/console/work/{caller.organization_id}?{urlencode({'done': 'report', 'task': accepted.task_id})}"
        return pages._secure(RedirectResponse(target, status_code=303))

    return await _member(request, organization_id, respond)


async def _queue_report_once(
    request: Request, caller: Caller, body: SalesReportRequest, key: str | None
) -> TaskAccepted:
    """The report queued once per form: the API's Idempotency-Key rules, with the form's key.

    The request is the report asked for (the body as the API's schema reads it), so the same
    form sent twice is one report, and the form changed and sent again (back, other dates) is
    another: the key is the form's and the report's together. A second submit that finds the
    first still queuing waits for its answer rather than telling the member "not requested"
    about a report that is on its way; if the first fails, its claim is freed and the second
    queues the report itself, as a retry of the API does."""
    if key is None:
        return await delivery.queue_sales_report(request, caller, body)
    report_digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    idempotency = Idempotency(request, Response(), f"console-report:{key}:{report_digest}")
    deadline = time.monotonic() + REPORT_KEY_WAIT_SECONDS
    while True:
        try:
            return await idempotency.once(
                caller,
                TaskAccepted,
                lambda: delivery.queue_sales_report(request, caller, body),
                body_digest=report_digest,
            )
        except HTTPException as error:
            if error.status_code != 409 or time.monotonic() >= deadline:
                raise
        logger.info(
            "console: a report form sent again while the first is queuing; waiting for its answer",
            extra={"action": "console.report_resubmitted", "organization_id": caller.organization_id},
        )
        await asyncio.sleep(REPORT_KEY_POLL_SECONDS)


@router.get("/{organization_id}/reports/files/{file_id}")
async def download_report(request: Request, organization_id: str, file_id: str) -> Response:
    async def respond(user: ConsoleUser, caller: Caller) -> Response:
        assert caller.organization_id is not None
        number = _url_id(file_id, f"organization {caller.organization_id} has no report file {file_id[:20]!r}")
        response = await delivery.report_download(caller.organization_id, number)
        return pages._secure(response)  # not cached, not sniffed as anything but its type

    return await _member(request, organization_id, respond)


# --- a CSV import ----------------------------------------------------------------------------------


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(UPLOAD_CHUNK_BYTES):
        yield chunk


async def _read_upload(request: Request, user: ConsoleUser) -> tuple[UploadFile, str]:
    """The form's file and its name, read whole into a temporary file (on disk past a MiB), its
    token checked: Refused without it, BadForm for anything but the console's upload form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise BadForm("send the console's upload form (multipart/form-data)", 415)
    try:
        fields = await request.form(max_files=1, max_fields=MAX_UPLOAD_FORM_FIELDS)
    except HTTPException as error:  # the parser's own refusal: too many fields or files, a bad body
        raise BadForm(f"not the console's upload form: {error.detail}") from None
    token_fields = ImmutableMultiDict([(key, value) for key, value in fields.multi_items() if isinstance(value, str)])
    sessions.check_form(request, token_fields, user)
    file = fields.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise BadForm("choose a CSV file to upload", 422)
    try:
        filename = _FILENAME.validate_python(file.filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    except ValidationError as error:
        raise BadForm(f"the file's name: {error.errors()[0]['msg']}", 422) from None
    return file, filename


@router.post("/{organization_id}/imports")
@accepts_body_up_to(lambda: get_settings().DATA_IMPORT_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES)
async def upload_import(request: Request, organization_id: str) -> Response:
    async def respond(user: ConsoleUser, caller: Caller) -> Response:
        # The organization's rule first: no one else's upload is read. Then the API's upload
        # slot, held while the body is read and stored, as the API's upload route holds it.
        async with upload_slot_for(caller):
            try:
                file, filename = await _read_upload(request, user)
            except BadForm as error:
                if error.status_code != 422:
                    raise Refused(str(error), error.status_code) from None
                return await _work_page(request, user, caller, upload_error=str(error), status_code=422)
            try:
                async with web_session_factory()() as session:
                    data_import, _ = await submission.upload_and_queue(
                        request, caller, filename, _chunks(file), session=session, declared_bytes=file.size
                    )
            except InvalidUpload as error:
                return await _work_page(request, user, caller, upload_error=f"Not uploaded: {error}", status_code=422)
            except HTTPException as error:  # 413 (size, storage quota), 429 (limits), 503 (no broker)
                message = f"Not uploaded: {error.detail}"
                refused = await _work_page(request, user, caller, upload_error=message, status_code=error.status_code)
                return _with_headers_of(error, refused)
            finally:
                await request.close()  # the temporary file goes now, not when the response is sent
        logger.info(
            "console: %s uploaded import %s",
            caller.email,
            data_import.id,
            extra={"action": "console.import_uploaded", "import_id": data_import.id},
        )
        target = f"/console/work/{caller.organization_id}/imports/{data_import.id}"
        return pages._secure(RedirectResponse(target, status_code=303))

    return await _member(request, organization_id, respond)


async def _import_context(caller: Caller, import_id: str, session: AsyncSession) -> dict[str, Any]:
    assert caller.organization_id is not None
    number = _url_id(import_id, _no_import(caller, import_id))
    data_import = await upload.get_import(caller.organization_id, number, session=session)
    errors = await upload.first_errors(data_import.id, ERRORS_SHOWN, session=session)
    await _end_reading(session)
    (row,) = await _import_rows(caller, [data_import])
    return {"row": row, "errors": errors, "organization_id": caller.organization_id, "errors_shown": ERRORS_SHOWN}


@router.get("/{organization_id}/imports/{import_id}")
async def import_page(request: Request, organization_id: str, import_id: str) -> Response:
    async def respond(user: ConsoleUser, caller: Caller) -> Response:
        async with web_session_factory()() as session:
            context = await _import_context(caller, import_id, session)
        if request.query_params.get("region") == "status":
            return pages._region_response(request, "work_import", context)
        status_html, status_etag = pages.render_region("work_import", context)
        frame = _frame(user, **context, status_html=status_html, status_etag=status_etag)
        return pages._page(request, "work_import.html", frame)

    return await _member(request, organization_id, respond)


@router.get("/{organization_id}/imports/{import_id}/errors.csv")
async def import_errors(request: Request, organization_id: str, import_id: str) -> Response:
    async def respond(user: ConsoleUser, caller: Caller) -> Response:
        assert caller.organization_id is not None
        number = _url_id(import_id, _no_import(caller, import_id))
        async with web_session_factory()() as session:
            response = await downloads.errors_csv(caller.organization_id, number, session=session)
        return pages._secure(response)  # not cached, not sniffed as anything but its type

    return await _member(request, organization_id, respond)
