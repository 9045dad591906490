"""`python -m pipeline serve`: an HTTP API that scores new frames against a frozen run.

A camera, a home-automation script or a phone app sends a frame; the service answers with the
scores `score-new` would give it, the run's verdict (junk or ok), its cluster and the nearest
stored frames, and writes nothing. Modules, one job each:

- `uploads`: reading a request's multipart body within the limits (size, count, empty parts);
- `scorer`: the loaded run and model, uploads -> results, switching to a newer run;
- `batcher`: micro-batching, so concurrent requests share one model pass;
- `app`: the FastAPI routes, JSON shapes, errors and the bearer token.

`run_server()` loads the run and the model once, then serves with uvicorn. The store is opened
read-only, briefly, for each look (DuckDB allows one writer or many readers, and the
dashboard, `watch` and the pipeline need the file too); while a writer holds it, a request
waits for it like the dashboard does (`store.connect`'s retries) and gets a 503 with
Retry-After if that takes longer than the lock timeout.
"""

from __future__ import annotations

import errno
from pathlib import Path

from pipeline.settings import Settings


def build(db: Path, settings: Settings, run_id: int | None = None, token: str | None = None):
    """The app, with its run and model loaded (a pinned run that cannot be served raises
    `AnalysisError` here; without one, a store with no run yet serves 503s until one comes)."""
    from pipeline.serve.app import create_app
    from pipeline.serve.scorer import Scorer

    scorer = Scorer(db, settings, run_id=run_id)
    scorer.refresh()
    return create_app(scorer, settings, token=token, reload=run_id is None)


def check_address(host: str, port: int) -> None:
    """`host:port` can be listened on (checked before the run and its model are loaded);
    `InputError` naming the fix otherwise (the port taken, a host name that is not known or
    not an address of this machine)."""
    import socket

    from pipeline.errors import InputError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(
            f"--host {host}: not an address this machine can listen on ({exc}); give an "
            "address of this machine, 127.0.0.1 (the default) or 0.0.0.0 (every address)"
        ) from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            fix = (
                "another program (another serve?) listens there: stop it or give --port N"
                if exc.errno == errno.EADDRINUSE
                else "give another --host or --port"
            )
            raise InputError(f"cannot listen on {host}:{port}: {reason}; {fix}") from None


def run_server(app, host: str, port: int) -> None:
    """Serve `app` with uvicorn until Ctrl-C or SIGTERM (both stop it cleanly)."""
    import uvicorn

    from pipeline.errors import PipelineError

    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="info",
            access_log=True,
            timeout_graceful_shutdown=10,
        )
    except SystemExit as exc:  # uvicorn exits 3 when it could not start (its ERROR line says why)
        if exc.code in (None, 0):
            raise
        raise PipelineError(
            f"the server could not start on {host}:{port} (the ERROR line above says why)"
        ) from None
