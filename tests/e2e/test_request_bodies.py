"""The web's edge against real sockets: anonymous, oversized, stalled and trickling bodies.

A real uvicorn, since what is measured is what uvicorn and the application read and keep: the
answer's time and how far the web process's memory rose (VmRSS in /proc).
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sqlalchemy import text

from tests.support import raw_http
from tests.support.processes import start_web

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
READ_TIMEOUT = 1.0
MIN_RATE = 2000  # bytes per second


@pytest.fixture(scope="module")
def web(migrated_database, redis_clean):
    process, url = start_web(
        env={
            "HTTP_BODY_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
            "HTTP_BODY_MIN_BYTES_PER_SECOND": str(MIN_RATE),
        }
    )
    yield process, url
    process.stop()


def json_array(size: int) -> list[bytes]:
    """A JSON array of zeros `size` bytes long, in 1 MiB pieces: costly to parse, cheap to make."""
    piece = b"0," * (MIB // 2)
    count = size // len(piece)
    return [b"[", *([piece] * count), b"0]"]


def grown_peak(pid: int, action) -> tuple[int, raw_http.RawAnswer]:
    """How far the process's memory rose above where it was while `action` ran, and its answer.

    Sampled every 10 ms (VmHWM would keep the peak of an earlier test)."""
    baseline = raw_http.rss_bytes(pid)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, raw_http.rss_bytes(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        answer = action()
        time.sleep(0.2)
    finally:
        done.set()
        sampler.join()
    return peak - baseline, answer


def warm_up(url: str, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(3):
            client.post("/api/v1/me/tokens", json={"name": "warm"}, headers=headers or {})


def test_an_anonymous_40_mib_body_is_answered_401_before_it_is_read(web):
    process, url = web
    warm_up(url)
    body = json_array(40 * MIB)
    size = sum(map(len, body))
    grown, answer = grown_peak(
        process.process.pid,
        lambda: raw_http.request(
            url,
            "POST",
            "/api/v1/me/tokens",
            {"Content-Type": "application/json", "Content-Length": str(size)},
            body,
        ),
    )
    assert grown < 8 * MIB, f"the web process grew by {grown / MIB:.1f} MiB"
    assert answer.status == 401, answer.body
    assert b"missing Authorization header" in answer.body
    assert answer.headers.get("connection") == "close"
    assert answer.seconds < 0.5, answer.seconds


def test_an_anonymous_chunked_body_is_answered_401_before_it_is_read(web):
    process, url = web
    warm_up(url)
    grown, answer = grown_peak(
        process.process.pid,
        lambda: raw_http.request(
            url,
            "POST",
            "/api/v1/me/tokens",
            {"Content-Type": "application/json", "Transfer-Encoding": "chunked", "Authorization": "Basic eDp5"},
            raw_http.chunked(json_array(40 * MIB)),
        ),
    )
    assert grown < 8 * MIB, f"the web process grew by {grown / MIB:.1f} MiB"
    assert answer.status == 401 and b"malformed Authorization header" in answer.body
    assert answer.seconds < 0.5, answer.seconds


def test_a_body_declared_over_the_limit_is_413_before_it_is_read(web, clean_tables, make_user):
    process, url = web
    user = make_user()
    warm_up(url, user.headers)
    body = json_array(40 * MIB)
    size = sum(map(len, body))
    grown, answer = grown_peak(
        process.process.pid,
        lambda: raw_http.request(
            url,
            "POST",
            "/api/v1/me/tokens",
            {"Content-Type": "application/json", "Content-Length": str(size), **user.headers},
            body,
        ),
    )
    assert grown < 8 * MIB, f"the web process grew by {grown / MIB:.1f} MiB"
    assert answer.status == 413, answer.body
    assert b"larger than 1,048,576 bytes" in answer.body
    assert answer.seconds < 0.5, answer.seconds


def test_a_streamed_body_is_cut_with_413_at_the_limit(web, clean_tables, make_user):
    process, url = web
    user = make_user()
    warm_up(url, user.headers)
    grown, answer = grown_peak(
        process.process.pid,
        lambda: raw_http.request(
            url,
            "POST",
            "/api/v1/me/tokens",
            {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **user.headers},
            raw_http.chunked(json_array(40 * MIB)),
        ),
    )
    assert grown < 8 * MIB, f"the web process grew by {grown / MIB:.1f} MiB"
    assert answer.status == 413, answer.body
    assert answer.body.startswith(b'{"error":{"code":"payload_too_large"')


def test_a_body_that_stops_is_cut_with_408(web, clean_tables, make_user):
    _, url = web
    user = make_user()
    connection = raw_http.open_request(
        url, "POST", "/api/v1/me/tokens", {"Content-Type": "application/json", "Content-Length": "100", **user.headers}
    )
    started = time.monotonic()
    try:
        connection.sendall(b'{"name": "')  # ... and nothing more
        answer = raw_http.read_answer(connection, started, timeout=READ_TIMEOUT + 5)
    finally:
        connection.close()
    assert answer.status == 408, answer.body
    assert b"stalled" in answer.body and b"10 bytes arrived" in answer.body
    assert READ_TIMEOUT * 0.9 < answer.seconds < READ_TIMEOUT + 1.5


def test_a_body_that_trickles_below_the_minimum_rate_is_cut_with_408(web, clean_tables, make_user):
    """One byte every half second never waits out the per-read timeout, but is far too slow."""
    _, url = web
    user = make_user()
    connection = raw_http.open_request(
        url,
        "POST",
        "/api/v1/me/tokens",
        {"Content-Type": "application/json", "Content-Length": "10000", **user.headers},
    )
    started = time.monotonic()
    answer = None
    try:
        connection.settimeout(0.5)
        for _ in range(40):
            try:
                connection.sendall(b" ")
                head = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if head:
                answer = head
                break
    finally:
        connection.close()
    elapsed = time.monotonic() - started
    assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
    # Allowed: the read timeout plus one second per MIN_RATE bytes (a few bytes here).
    assert elapsed < READ_TIMEOUT + 2, elapsed


def test_a_body_within_the_limits_is_read_as_before(web, clean_tables, make_user):
    _, url = web
    user = make_user()
    with httpx.Client(base_url=url, headers=user.headers, timeout=10) as client:
        created = client.post("/api/v1/me/tokens", json={"name": "x" * 100})
        assert created.status_code == 201, created.text
        assert client.get("/health/live").status_code == 200


def test_an_upload_that_stops_is_cut_with_408_and_leaves_nothing(web, clean_tables, make_user, sync_engine):
    _, url = web
    user = make_user()
    path = f"/api/v1/organizations/{user.organization_id}/imports/sales-orders?filename=stalled.csv"
    connection = raw_http.open_request(
        url, "POST", path, {"Content-Type": "text/csv", "Content-Length": "100000", **user.headers}
    )
    started = time.monotonic()
    try:
        connection.sendall(b"order_number,order_date,customer,currency,product,quantity,unit_price\n")
        answer = raw_http.read_answer(connection, started, timeout=READ_TIMEOUT + 5)
    finally:
        connection.close()
    assert answer.status == 408, answer.body
    assert answer.seconds < READ_TIMEOUT + 1.5
    with sync_engine.connect() as db:
        assert db.scalar(text("SELECT count(*) FROM files")) == 0
        assert db.scalar(text("SELECT count(*) FROM data_imports")) == 0
