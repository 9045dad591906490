"""Helpers for the `serve` and `watch` tests: the demo store they score against, a real uvicorn
server on a free 127.0.0.1 port, and plain HTTP (urllib) with multipart uploads.

`build_demo_store` renders a small demo time-lapse (two days, so every time-lapse detector
scores), holds back its last frames (`DemoStore.new`: never ingested, to be scored as new
frames) and runs every stage on the rest with the fast `pixels` model.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

N_DEMO_FRAMES = 80
N_NEW = 6


@dataclass
class DemoStore:
    db: Path
    frames: Path  # the analysed frames
    new: list[Path]  # frames of the same camera the store has never seen
    settings: object  # the pipeline Settings the store was made with

    def copy(self, folder: Path) -> Path:
        """A private copy of the store file in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "store.duckdb"
        shutil.copy(self.db, target)
        return target


def build_demo_store(base: Path) -> DemoStore:
    from pipeline.demo import DEMO_PLACE, render_demo
    from pipeline.runner import run_all
    from pipeline.settings import Settings

    rendered = render_demo(
        base / "demo",
        n_frames=N_DEMO_FRAMES,
        size=(320, 180),
        seed=11,
        interval_minutes=(30, 40),
        progress=False,
        workers=1,
    )
    frames = sorted(rendered.frames_dir.rglob("*.jpg"))
    held = base / "held"
    held.mkdir()
    new = []
    for path in frames[-N_NEW:]:
        new.append(held / path.name)
        shutil.move(path, new[-1])
    settings = Settings(
        model="pixels",
        timezone=DEMO_PLACE.timezone,
        lat=DEMO_PLACE.lat,
        lon=DEMO_PLACE.lon,
        workers=1,
    )
    db = base / "store.duckdb"
    for _ in run_all(rendered.frames_dir, db, settings, progress=False):
        pass
    return DemoStore(db, rendered.frames_dir, new, settings)


# --- a real server ----------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free 127.0.0.1 port; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


# --- HTTP -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 120,
) -> Reply:
    """One HTTP request; the reply whatever its status."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, dict(exc.headers), exc.read())


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name or None, bytes) parts, and its
    content type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            raw = os.fsencode(filename).decode("utf-8", "surrogateescape")
            disposition += f'; filename="{raw}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n".encode("utf-8", "surrogateescape")
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def score(
    base: str,
    files: list[Path] | list[tuple[str, bytes]],
    times: list[str] | None = None,
    token: str | None = None,
    extra: list[tuple[str, str | None, bytes]] = (),
) -> Reply:
    """POST /v1/score with these files (paths, or (name, bytes)) as `file` parts."""
    parts = [("file", *(f if isinstance(f, tuple) else (f.name, f.read_bytes()))) for f in files]
    parts += [("taken_at", None, t.encode()) for t in times or []]
    body, content_type = multipart(parts + list(extra))
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return http(f"{base}/v1/score", "POST", body, headers)


def get(base: str, path: str, token: str | None = None) -> Reply:
    return http(base + path, headers={"Authorization": f"Bearer {token}"} if token else None)


def expect_continue(base: str, size: int, filename: str = "big.jpg") -> Reply:
    """A POST /v1/score that announces a `size`-byte file and asks `Expect: 100-continue`, as
    curl does for large uploads, and sends the body only if the server says continue; returns
    the server's final answer."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /v1/score HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(head) + size + len(tail)}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        status_line, _, rest = data.partition(b"\r\n")
        status = int(status_line.split()[1])
        if status == 100:
            raise AssertionError("the server asked for the body of an oversized upload")
        headers_blob, _, body = rest.partition(b"\r\n\r\n")
        headers = dict(line.decode().split(": ", 1) for line in headers_blob.split(b"\r\n"))
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                break
            body += more
        return Reply(status, headers, body)
