"""Benchmark `serve` against `score-new` on the same new frames, in the same run; prints JSON.

    .venv/bin/python bench/serve.py [--model vgg16-hed-grid] [--frames 64] [--store-frames 240]
                                    [--clients 1,4,16] [--size 640x360] [--rounds 2]
                                    [--out DIR]

It renders a demo time-lapse of `--store-frames` + `--frames` frames, runs every stage on the
first ones (`--out` keeps the store: a second run with the same options reuses it), and holds
back the last `--frames` as new frames. Then, each on its own copy of the store:

- `score-new`: `pipeline.score_new.score_new` on a folder of the new frames, in this process:
  ingest, embed, score, rows added. Its rate leaves out building the model, which it does on
  every call and `serve` once at start: the build is timed on its own just before and
  subtracted (`score_new_s` - `model_build_s`).
- `serve`: `python -m pipeline serve` as a child process on a free 127.0.0.1 port, and
  `--clients` client threads (one keep-alive HTTP connection each) that POST the new frames,
  one file per request, until each frame was sent once. Reported per concurrency: frames/s
  over the whole burst, p50 and p95 request latency.

The two sides alternate for `--rounds` rounds (score-new, then every burst; again), so slow
spells of a shared machine hit both; the best round of each is kept, and `ratio` is serve's
best frames/s over score-new's best (target: >= 0.8 at 16 clients). Every round is in
`rounds`. One server serves every round, warmed up first with one burst per client count.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_store(out: Path, model: str, n_store: int, n_new: int, size: tuple[int, int]):
    """(store, new frames): the demo rendered and analysed once per set of options."""
    from pipeline.demo import DEMO_PLACE, render_demo
    from pipeline.runner import run_all
    from pipeline.settings import Settings

    settings = Settings(
        model=model, timezone=DEMO_PLACE.timezone, lat=DEMO_PLACE.lat, lon=DEMO_PLACE.lon
    )
    key = out / f"{model.replace(':', '_').replace('/', '_')}-{n_store}-{n_new}-{size[0]}x{size[1]}"
    db, held = key / "store.duckdb", key / "new"
    if db.exists() and held.is_dir():
        return db, sorted(held.glob("*.jpg")), settings
    shutil.rmtree(key, ignore_errors=True)
    rendered = render_demo(
        key / "demo", n_frames=n_store + n_new, size=size, progress=False, interval_minutes=(20, 30)
    )
    frames = sorted(rendered.frames_dir.rglob("*.jpg"))
    held.mkdir(parents=True)
    for path in frames[-n_new:]:
        shutil.move(path, held / path.name)
    for line in run_all(rendered.frames_dir, db, settings, progress=False):
        print(line, file=sys.stderr)
    return db, sorted(held.glob("*.jpg")), settings


def time_score_new(db: Path, new: list[Path], settings, work: Path) -> dict:
    from pipeline.embed import build_embedder
    from pipeline.models import get_model
    from pipeline.score_new import score_new

    folder = work / "score-new"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for path in new:
        shutil.copy(path, folder / path.name)
    copy = work / "score-new.duckdb"
    shutil.copy(db, copy)
    started = time.perf_counter()
    build_embedder(get_model(settings.model), settings)
    build = time.perf_counter() - started
    started = time.perf_counter()
    result = score_new(folder, copy, settings, progress=False)
    wall = time.perf_counter() - started
    assert len(result.frames) == len(new), result.describe()
    return {
        "score_new_s": round(wall, 3),
        "model_build_s": round(build, 3),
        "frames_per_s": round(len(new) / max(wall - build, 1e-9), 3),
    }


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _post(conn: http.client.HTTPConnection, name: str, data: bytes) -> float:
    body, content_type = _multipart(name, data)
    started = time.perf_counter()
    conn.request("POST", "/v1/score", body, {"Content-Type": content_type})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
    return time.perf_counter() - started


def burst(port: int, files: list[tuple[str, bytes]], n_clients: int) -> dict:
    """Every file sent once, by `n_clients` threads, one file per request."""
    latencies: list[float] = []
    lock = threading.Lock()
    todo = list(files)
    errors: list[Exception] = []
    barrier = threading.Barrier(n_clients)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        barrier.wait()
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    name, data = todo.pop()
                took = _post(conn, name, data)
                with lock:
                    latencies.append(took)
        except Exception as exc:  # noqa: BLE001 - reported, and the benchmark fails
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "clients": n_clients,
        "frames": len(files),
        "wall_s": round(wall, 3),
        "frames_per_s": round(len(files) / wall, 3),
        "p50_s": pct(0.5),
        "p95_s": pct(0.95),
    }


class Server:
    """`python -m pipeline serve` on a copy of the store, in a child process."""

    def __init__(self, db: Path, settings, work: Path):
        copy = work / "serve.duckdb"
        shutil.copy(db, copy)
        config = work / "serve.toml"
        config.write_text(f'model = "{settings.model}"' + "\n")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log_path = work / "serve.log"
        self.log = open(self.log_path, "w")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "--config",
                str(config),
                "serve",
                "--db",
                str(copy),
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        started = time.perf_counter()
        while not self._healthy():
            if self.proc.poll() is not None or time.perf_counter() - started > 600:
                raise RuntimeError("serve did not start: " + self.log_path.read_text())
            time.sleep(0.5)
        self.startup_s = round(time.perf_counter() - started, 3)

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/v1/health")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="vgg16-hed-grid")
    parser.add_argument("--frames", type=int, default=64, help="new frames scored")
    parser.add_argument("--store-frames", type=int, default=240, help="frames in the fit")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="keep the rendered, analysed store here for the next run",
    )
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    clients = [int(c) for c in args.clients.split(",")]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    out.mkdir(parents=True, exist_ok=True)
    db, new, settings = build_store(out, args.model, args.store_frames, args.frames, size)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-run-") as tmp:
        work = Path(tmp)
        server = Server(db, settings, work)
        try:
            files = [(p.name, p.read_bytes()) for p in new]
            for n in sorted(set(clients)):  # warm-up: the model sees each batch size once
                burst(server.port, files[:n], n)
            for _ in range(args.rounds):
                rounds.append(
                    {
                        "score_new": time_score_new(db, new, settings, work),
                        "serve": [burst(server.port, files, n) for n in clients],
                    }
                )
        finally:
            server.stop()
    best_new = max(r["score_new"]["frames_per_s"] for r in rounds)
    best = []
    for i in range(len(clients)):
        top = max((r["serve"][i] for r in rounds), key=lambda b: b["frames_per_s"])
        best.append({**top, "ratio": round(top["frames_per_s"] / best_new, 3)})
    print(
        json.dumps(
            {
                "model": args.model,
                "new_frames": len(new),
                "store_frames": args.store_frames,
                "size": args.size,
                "score_new_frames_per_s": best_new,
                "serve": best,
                "serve_startup_s": server.startup_s,
                "rounds": rounds,
                "load_average": [round(v, 2) for v in os.getloadavg()],
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "commit": subprocess.run(
                    ["git", "rev-parse", "--short", "HEAD"],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                ).stdout.strip(),
            },
            indent=1,
        )
    )
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
