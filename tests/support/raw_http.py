"""HTTP over a plain socket, for clients no library will play: ones that send a huge body, stall
half-way or trickle, while the test watches when the answer comes and what the server paid."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the whole answer read


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (`VmRSS`) or its peak so far (`VmHWM`), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def open_request(url: str, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    """A connection that has sent the request line and headers, and nothing of the body."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers.items())]
    connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return connection


def read_answer(connection: socket.socket, started: float, timeout: float) -> RawAnswer:
    connection.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = connection.recv(65536)
        if not piece:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        piece = connection.recv(65536)
        if not piece:
            break
        body += piece
    return RawAnswer(int(status_line.split()[1]), headers, body, time.monotonic() - started)


def request(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Iterable[bytes],
    timeout: float = 30,
) -> RawAnswer:
    """Send the request, the body from a thread (the server may answer, and close, before it has
    all of it: what it did not read is dropped), and read the answer meanwhile."""
    connection = open_request(url, method, path, headers)
    started = time.monotonic()

    def send_body() -> None:
        try:
            for piece in body:
                connection.sendall(piece)
        except OSError:
            pass  # the server answered and closed: the rest was not wanted

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    try:
        return read_answer(connection, started, timeout)
    finally:
        connection.close()
        sender.join(5)


def chunked(pieces: Iterable[bytes]) -> Iterable[bytes]:
    """`Transfer-Encoding: chunked` framing of `pieces`."""
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"
