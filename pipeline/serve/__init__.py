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


def run_server(app, host: str, port: int) -> None:
    """Serve `app` with uvicorn until Ctrl-C or SIGTERM (both stop it cleanly)."""
    import uvicorn

    uvicorn.run(
        app, host=host, port=port, log_level="info", access_log=True, timeout_graceful_shutdown=10
    )
