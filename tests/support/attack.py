"""Attacking connections against a router, in their own process (so they do not share the
test's interpreter lock): ``python -m tests.support.attack PORT KEY HEADERS SLOW``.

HEADERS connections each send one endless header, reconnecting when refused; SLOW connections
each announce a 1 MB body and send it a byte every 100 ms. Runs until killed.
"""

from __future__ import annotations

import socket
import sys
import threading
import time


def big_headers(port: int) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
                while True:
                    sock.sendall(b"a" * 65536)
        except OSError:
            time.sleep(0.01)


def slow_body(port: int, key: str) -> None:
    head = (
        "POST /score HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: 1000000\r\n\r\n"
    ).encode()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(head)
                while True:
                    sock.sendall(b"a")
                    time.sleep(0.1)
        except OSError:
            time.sleep(0.01)


def main() -> None:
    port, key, headers, slow = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    threads = [
        threading.Thread(target=big_headers, args=(port,), daemon=True) for _ in range(headers)
    ]
    threads += [
        threading.Thread(target=slow_body, args=(port, key), daemon=True) for _ in range(slow)
    ]
    for t in threads:
        t.start()
    print("attacking", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
