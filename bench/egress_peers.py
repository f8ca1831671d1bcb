"""The egress benchmark's two peers (bench/egress.py drives both).

    python bench/egress_peers.py serve    # upstreams on the host's loopback
    python bench/egress_peers.py client   # the measuring client, on the host or jailed

`serve` listens on 127.0.0.1 with an HTTP server whose GET /N answers N MiB (one 1 MiB
buffer sent N times, nothing on disk) and a TCP echo server; it prints "HTTP_PORT
ECHO_PORT" and serves until its stdin closes. It is a process of its own, so its threads
never take the GIL from the proxy measured in the benchmark's process.

`client` reads one JSON command a line on stdin and answers one JSON line on stdout. The
same client runs directly on the host and inside the jail, so every path pays the same
client cost and the jail's start-up is paid once, before anything is timed:

    {"op": "curl", "via": "direct"|"proxy"|"forward", "port": P, "mib": N}
        -> {"bytes": B, "seconds": S}   (curl's own size_download and time_total)
    {"op": "connect", "via": "direct"|"proxy"|"forward", "port": P, "n": N}
        -> {"us": [...]}   N sequential connections: connect, (CONNECT through the HTTP
           proxy,) send 1 byte, receive its echo, close; each timed from before connect()
           to the echo byte
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

_MIB = 1 << 20


# --- serve ----------------------------------------------------------------------------


def _http(conn: socket.socket, body: memoryview) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(8192)
            if not chunk:
                return
            head += chunk
        target = head.split(b" ", 2)[1].rsplit(b"/", 1)[-1]
        mib = int(target) if target.isdigit() else 1
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (mib * _MIB)
        )
        for _ in range(mib):
            conn.sendall(body)
        conn.shutdown(socket.SHUT_WR)


def _serve_http(server: socket.socket) -> None:
    body = memoryview(b"x" * _MIB)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_http, args=(conn, body), daemon=True).start()


def _serve_echo(server: socket.socket) -> None:
    """One thread, non-blocking: no thread start per connection in the figure."""
    sel = selectors.DefaultSelector()
    server.setblocking(False)
    sel.register(server, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is server:
                try:
                    conn, _ = server.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                try:
                    sock.sendall(data)  # one byte at a time here: never blocks
                    continue
                except OSError:
                    pass
            sel.unregister(sock)
            sock.close()


def serve() -> int:
    http = socket.create_server(("127.0.0.1", 0), backlog=128)
    echo = socket.create_server(("127.0.0.1", 0), backlog=128)
    threading.Thread(target=_serve_http, args=(http,), daemon=True).start()
    threading.Thread(target=_serve_echo, args=(echo,), daemon=True).start()
    print(http.getsockname()[1], echo.getsockname()[1], flush=True)
    sys.stdin.buffer.read()  # until the benchmark closes our stdin
    return 0


# --- client ---------------------------------------------------------------------------


def _curl(via: str, port: int, mib: int) -> dict[str, object]:
    if via == "proxy":  # the jail's http_proxy; no_proxy lists 127.0.0.1, so override it
        route = ["--proxy", os.environ["http_proxy"], "--noproxy", ""]
    else:  # direct on the host; "forward": 127.0.0.1:port inside the jail is the forward
        route = ["--noproxy", "*"]
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "120",
            *route,
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            f"http://127.0.0.1:{port}/{mib}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    size, seconds = out.stdout.split()
    return {"bytes": int(size), "seconds": float(seconds)}


def _proxy_address() -> tuple[str, int]:
    host, _, port = os.environ["http_proxy"].removeprefix("http://").rstrip("/").rpartition(":")
    return host, int(port)


def _connect(via: str, port: int, n: int) -> dict[str, object]:
    target = _proxy_address() if via == "proxy" else ("127.0.0.1", port)
    request = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(target)
        if via == "proxy":
            sock.sendall(request)
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("the proxy closed before its reply")
                reply += chunk
            if not reply.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(f"the proxy refused: {reply[:200]!r}")
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise ConnectionError(f"no echo through {via}")
        times.append((time.perf_counter() - t0) * 1e6)
        sock.close()
    return {"us": times}


def client() -> int:
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            if cmd["op"] == "curl":
                answer = _curl(cmd["via"], cmd["port"], cmd["mib"])
            else:
                answer = _connect(cmd["via"], cmd["port"], cmd["n"])
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or ""
            answer = {"error": f"{exc} {detail}".strip()}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["serve"] else client())
