"""Dispatch throughput and latency of `POST /api/v1/tasks/ping` against the real uvicorn.

Baseline, in the same run: raw `apply_async` of the same task from one process (kombu). The API
path adds HTTP, token authentication, the organization lookup and the owner record, and
publishes with redis.asyncio on the event loop (erp.core.broker). Clients are asyncio
connections with keep-alive (reconnecting every 100 requests), in a process of their own. Own
database (erp_bench) and Redis databases 14 and 15.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from erp.accounts import service as accounts
from erp.core.config import get_settings
from erp.core.db import run_with_session
from erp.features.ping.tasks import ping
from scripts.benchmarks.beat import recreate_database
from scripts.benchmarks.common import use_benchmark_environment

REPO_ROOT = Path(__file__).resolve().parents[2]


def raw_apply_async_rate(messages: int) -> float:
    for _ in range(200):  # warm up the connection
        ping.apply_async()
    started = time.perf_counter()
    for _ in range(messages):
        ping.apply_async()
    return messages / (time.perf_counter() - started)


def create_token() -> str:
    async def action(session):
        actor = accounts.COMMAND_LINE
        user = await accounts.ensure_superuser("bench@example.com", "Bench", "Bench", actor=actor, session=session)
        _, secret = await accounts.create_token(user.id, "bench", None, actor=actor, session=session)
        return secret

    return run_with_session(action)


# Each client reconnects after this many requests. uvicorn's workers share one listening
# socket, and 32 connections held for the whole run can land unevenly (all on one worker in
# one run seen: half the throughput); reconnecting spreads them as real traffic would.
REQUESTS_PER_CONNECTION = 100


async def _client(port: int, token: str, deadline: float, latencies: list[float], errors: list[int]) -> None:
    request = (
        f"POST /api/v1/tasks/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    while time.perf_counter() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(REQUESTS_PER_CONNECTION):
            if time.perf_counter() >= deadline:
                break
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 202"):
                errors.append(int(head[9:12]))
        writer.close()
        await writer.wait_closed()


def _load(port: int, token: str, clients: int, seconds: float, results) -> None:
    async def run() -> None:
        latencies: list[float] = []
        errors: list[int] = []
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*(_client(port, token, deadline, latencies, errors) for _ in range(clients)))
        results.update(elapsed=time.perf_counter() - started, latencies=latencies, errors=errors)

    asyncio.run(run())


def main() -> None:
    use_benchmark_environment()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn processes (WEB_CONCURRENCY)")
    args = parser.parse_args()

    recreate_database()
    broker = redis.Redis.from_url(get_settings().broker_url)
    broker.flushdb()
    raw_before = raw_apply_async_rate(5000)
    broker.flushdb()
    token = create_token()

    port = 8765
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "erp.api.app:create_app",
            "--port",
            str(port),
            "--workers",
            str(args.web_workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO_ROOT,
        # One token sends thousands of pings a second: the rate limits (erp.core.quotas) are
        # raised out of the way, so what is measured is a dispatch, its limit check included.
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "TASKS_PER_MINUTE_PER_USER": "1000000",
            "TASKS_PER_MINUTE_PER_ORGANIZATION": "1000000",
        },
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("bench_api: uvicorn did not start") from None
                time.sleep(0.2)
        with multiprocessing.Manager() as manager:
            results = manager.dict()
            _load_in_child(port, token, min(4, args.clients), 2, results)  # warm-up
            results = manager.dict()
            _load_in_child(port, token, args.clients, args.seconds, results)
            results = dict(results)
    finally:
        web.terminate()
        web.wait(30)
    queued = broker.llen("celery")
    broker.flushdb()
    # Measured on both sides of the API run and averaged: this shared machine's speed drifts.
    raw_after = raw_apply_async_rate(5000)
    broker.flushdb()
    raw_rate = (raw_before + raw_after) / 2
    latencies = sorted(results["latencies"])
    rate = len(latencies) / results["elapsed"]
    print(
        f"raw apply_async, one process: {raw_rate:,.0f} tasks/s (baseline; {raw_before:,.0f} before, {raw_after:,.0f} after)"
    )
    print(
        f"POST /api/v1/tasks/ping, {args.clients} clients, {args.web_workers} uvicorn workers, {args.seconds:g} s: "
        f"{rate:,.0f} requests/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, non-202: {len(results['errors'])}"
    )
    print(f"API / raw ratio: {rate / raw_rate:.2f} (target >= 0.7); messages queued: {queued:,}")


def _load_in_child(port: int, token: str, clients: int, seconds: float, results) -> None:
    child = multiprocessing.get_context("spawn").Process(target=_load, args=(port, token, clients, seconds, results))
    child.start()
    child.join()


if __name__ == "__main__":
    main()
