"""A deployment that misbehaves on purpose, for the router's hardening tests.

``raw_upstream(answer)`` serves HTTP/1.1 on raw sockets from threads of the test process: it
reads each request (Content-Length framed, as the router sends them) and calls
``answer(request, sock)``, which writes whatever bytes it likes (extra responses, trailers, a
close-delimited body, nothing at all) and returns False to close the connection. Every request
received is recorded, so a test can count how many attempts reached the deployment.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class RawRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[RawRequest, socket.socket], bool]


@dataclass
class RawUpstream:
    url: str
    requests: list[RawRequest] = field(default_factory=list)


def response(status: int, body: bytes, *headers: tuple[str, str], length: bool = True) -> bytes:
    """Response bytes; ``length=False`` leaves Content-Length out (the caller frames it)."""
    head = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers]
    if length:
        head.append(f"content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _read_request(sock: socket.socket, buf: bytearray) -> RawRequest | None:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    del buf[:]
    buf += rest[size:]
    return RawRequest(method, path, headers, rest[:size])


@contextlib.contextmanager
def raw_upstream(answer: Answer) -> Iterator[RawUpstream]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    listener.settimeout(0.2)  # so the accept loop sees ``stop``
    up = RawUpstream(f"http://127.0.0.1:{listener.getsockname()[1]}")
    lock = threading.Lock()
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve(sock: socket.socket) -> None:
        buf = bytearray()
        with contextlib.suppress(OSError), sock:
            while not stop.is_set():
                req = _read_request(sock, buf)
                if req is None:
                    return
                with lock:
                    up.requests.append(req)
                if not answer(req, sock):
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            conns.append(sock)
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield up
    finally:
        stop.set()
        listener.close()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread.join(5)


def reset(sock: socket.socket) -> bool:
    """Drop the connection with a reset and no answer, as a worker killed mid-request does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return False
