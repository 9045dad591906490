"""The HTTP API of `serve` (FastAPI): routes, JSON shapes, errors, the bearer token.

Routes (JSON everywhere; OpenAPI docs at /docs):

- `GET /v1/health`: the run scored against, or 503 saying what to do (no token needed);
- `POST /v1/score`: multipart `file` parts (+ optional `taken_at` fields) -> a result each;
- `GET /v1/frames/{frame_id}` and `/v1/frames/{frame_id}/thumbnail`: a stored frame;
- `GET /v1/runs`: the complete runs with a saved fit.

Every refusal is JSON `{"detail": message, "problem": code}` (and `"filename"` for a file):
4xx for what the request did wrong (`uploads.UploadError`), 503 when the service cannot score
now (`scorer.Unavailable`, a store busy or unreadable), 401 without the token. A request that
fails leaves nothing behind; the next one is served normally. Decoding runs in a pool of
threads and scoring in the micro-batcher's thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Literal
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

import store
from pipeline import __version__
from pipeline.serve.batcher import MicroBatcher
from pipeline.serve.scorer import Scorer, Unavailable, decode_upload
from pipeline.serve.uploads import FILE_FIELD, TIME_FIELD, UploadError, read_form
from pipeline.settings import Settings
from store import analysis as sa
from store import facts

# uvicorn's logger: in the `serve` process its lines show among uvicorn's own, at INFO level
log = logging.getLogger("uvicorn.error")

HEALTH_PATH = "/v1/health"
ROUTES = (  # named in the answer to a path or method that is not one of them
    "GET /v1/health, POST /v1/score, GET /v1/frames/{frame_id}, "
    "GET /v1/frames/{frame_id}/thumbnail, GET /v1/runs"
)
# The dashboard's Frame page: its URL path and its URL key (dashboard/pages.py; the pipeline
# does not import the dashboard, a test checks the two agree).
DASHBOARD_FRAME_PAGE = "frame"
DASHBOARD_FRAME_KEY = "frame"
_WEATHER = (
    "station",
    "observed_at",
    "condition",
    "temperature_c",
    "precipitation_mm",
    "cloud_cover_pct",
    "wind_speed_ms",
    "visibility_km",
)
_FRAME_FACTS = (
    "path",
    "taken_at",
    "taken_at_utc",
    "time_source",
    "width",
    "height",
    "daylight",
    "sun_elevation",
    "mean_luma",
    "contrast",
    "sharpness",
    "colorfulness",
)


def _backend(embedder) -> dict:
    """What runs the run's model: the Keras backend and the GPUs it sees (none for `pixels`)."""
    from pipeline.models.embedder import KerasEmbedder

    if not isinstance(embedder, KerasEmbedder):
        return {"backend": None, "gpus": []}
    from pipeline.models.keras_setup import backend_version, gpus

    return {"backend": backend_version(), "gpus": gpus()}


# --- JSON shapes (the OpenAPI docs show them) ---------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    run_id: int
    model: str
    precision: str  # what uploads are embedded at: the run's vectors' precision by default
    backend: str | None  # the Keras backend and its version; None for a model without Keras
    gpus: list[str]  # the GPUs that backend sees (empty: it runs on the CPU)
    frames: int


class Problem(BaseModel):
    detail: str
    problem: str
    filename: str | None = None


class Score(BaseModel):
    score: float | None  # higher = more abnormal; null: the detector could not score it
    percentile: float | None  # 0..1: its rank among the fit frames' scores


class Nearest(BaseModel):
    frame_id: int
    taken_at: str | None
    distance: float
    thumbnail_url: str
    dashboard_url: str


class Result(BaseModel):
    filename: str
    verdict: Literal["junk", "ok"]
    too_far: bool
    cluster: int
    scores: dict[str, Score]
    nearest: list[Nearest]
    taken_at: str | None
    seconds: float


class Scored(BaseModel):
    run_id: int
    results: list[Result]


class RunInfo(BaseModel):
    run_id: int
    model: str
    n_frames: int | None
    started_at: str | None
    finished_at: str | None
    code_version: str | None
    serving: bool


class Runs(BaseModel):
    runs: list[RunInfo]


class FrameScore(BaseModel):
    score: float | None
    percentile: float | None
    is_outlier: bool | None


class Review(BaseModel):
    verdict: str
    note: str | None
    reviewed_at: str | None


class FrameInfo(BaseModel):
    frame_id: int
    path: str
    taken_at: str | None
    taken_at_utc: str | None
    time_source: str | None
    width: int | None
    height: int | None
    daylight: str | None
    sun_elevation: float | None
    mean_luma: float | None
    contrast: float | None
    sharpness: float | None
    colorfulness: float | None
    weather: dict[str, str | float | None] | None
    run_id: int | None
    cluster: int | None
    scores: dict[str, FrameScore]
    review: Review | None
    thumbnail_url: str
    dashboard_url: str


_SCORE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {
                        FILE_FIELD: {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or more JPEG, PNG, WebP or BMP frames",
                        },
                        TIME_FIELD: {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "optional, one per file: when it was taken (ISO 8601; "
                            "overrides the EXIF time)",
                        },
                    },
                }
            }
        },
    }
}
_ERRORS = {code: {"model": Problem} for code in (400, 401, 413, 415, 422, 503)}


# --- the token --------------------------------------------------------------------------------


class BearerToken:
    """ASGI middleware: every path but /v1/health needs `Authorization: Bearer <token>`
    (compared in constant time); 401 JSON otherwise."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _path(scope) == HEALTH_PATH:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, value = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token):
            return await self.app(scope, receive, send)
        given = _what_was_given(scheme, value)
        response = JSONResponse(
            {
                "detail": f"{given}: send the header `Authorization: Bearer <token>` with the "
                "token from the server's --token-file",
                "problem": "unauthorized",
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def _what_was_given(scheme: bytes, value: bytes) -> str:
    """What a refused Authorization header held, in words (never the token itself)."""
    if scheme.lower() == b"bearer" or not scheme.strip():
        return "a wrong token" if value.strip() else "no token"
    if not value.strip():
        return "a token without the Bearer scheme"
    return f"the {scheme[:20].decode('latin-1')} scheme, not Bearer"  # Basic: a browser's


class NoQuery:
    """ASGI middleware: the /v1/ routes take no query parameters, so one is refused (400
    `unknown_parameter`) rather than silently ignored: `POST /v1/score?taken_at=...` would
    otherwise score the frame with another time than the client meant."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        path = _path(scope)
        if not query or not path.startswith("/v1/") or path == HEALTH_PATH:  # probes: never
            return await self.app(scope, receive, send)
        names = sorted({name for name, _ in parse_qsl(query.decode("latin-1"), True)}) or [
            query.decode("latin-1")
        ]
        hint = (
            " (a frame's time goes as a `taken_at` form field after its `file` part)"
            if TIME_FIELD in names
            else ""
        )
        response = JSONResponse(
            {
                "detail": f"unknown query {_plural(names)}: {path} takes none; send "
                f"the request without it{hint}",
                "problem": "unknown_parameter",
            },
            status_code=400,
        )
        await response(scope, receive, send)


def _plural(names: list[str]) -> str:
    return ("parameter " if len(names) == 1 else "parameters ") + ", ".join(map(repr, names))


def _path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


# --- the app ----------------------------------------------------------------------------------


def create_app(
    scorer: Scorer, settings: Settings, token: str | None = None, reload: bool = True
) -> FastAPI:
    """The FastAPI app over a `Scorer`; `reload`: look for newer runs every
    `serve_reload_seconds` (off when a run id is pinned)."""
    batcher = MicroBatcher(scorer.score_groups, settings.serve_batch_ms / 1000, settings.batch_size)
    decoders = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="decode")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        poller = (
            asyncio.create_task(_poll(scorer, settings.serve_reload_seconds)) if reload else None
        )
        try:
            yield
        finally:
            if poller is not None:
                poller.cancel()
            await batcher.stop()
            decoders.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="Garden time-lapse outlier explorer",
        version=__version__,
        summary="Scores new frames against a frozen analysis run (nothing is written)",
        lifespan=lifespan,
    )
    app.state.scorer = scorer
    app.state.batcher = batcher
    app.add_middleware(NoQuery)
    if token:  # added last, so checked first: without the token nothing else is said
        app.add_middleware(BearerToken, token=token)

    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError):
        body = {"detail": str(exc), "problem": exc.problem}
        if exc.filename is not None:
            body["filename"] = exc.filename
        return JSONResponse(body, status_code=exc.status)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse(
            {"detail": str(exc), "problem": exc.problem}, status_code=503, headers=headers
        )

    @app.exception_handler(store.StoreError)
    async def _store_error(request: Request, exc: store.StoreError):
        busy = isinstance(exc, store.StoreLockedError)
        return JSONResponse(
            {"detail": str(exc), "problem": "store_busy" if busy else "store"},
            status_code=503,
            headers={"Retry-After": "5"} if busy else None,
        )

    @app.exception_handler(RequestValidationError)
    async def _bad_parameter(request: Request, exc: RequestValidationError):
        wrong = "; ".join(
            f"{error['loc'][-1]} in the {error['loc'][0]}: {error['msg'].lower()} "
            f"(got {error.get('input')!r})"
            for error in exc.errors()
        )
        if any(error["loc"][-1] == "frame_id" for error in exc.errors()):
            wrong += "; frame ids are whole numbers, e.g. /v1/frames/131"
        return JSONResponse({"detail": wrong, "problem": "bad_parameter"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            body = {
                "detail": f"no route {where}; the routes are {ROUTES} (and /docs)",
                "problem": "not_found",
            }
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "another method")
            body = {
                "detail": f"{where} is not allowed: use {allowed} (the routes: {ROUTES})",
                "problem": "method_not_allowed",
            }
        else:
            body = {"detail": str(exc.detail), "problem": "http_error"}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # logged by uvicorn; serving goes on
        return JSONResponse(
            {
                "detail": f"internal error ({type(exc).__name__}: {exc}); the "
                "service keeps running",
                "problem": "internal",
            },
            status_code=500,
        )

    @app.get(
        HEALTH_PATH,
        response_model=Health,
        responses={503: {"description": "no run to score against yet (run analyze)"}},
    )
    async def health():
        """The run new frames are scored against; 503 (and what to do) when there is none."""
        try:
            run = scorer.run()
        except Unavailable as exc:
            return JSONResponse(
                {"status": "unavailable", "detail": str(exc), "problem": exc.problem},
                status_code=503,
                headers={"Retry-After": str(exc.retry_after or 30)},
            )
        return {
            "status": "ok",
            "run_id": run.run_id,
            "model": run.fitted.model,
            "precision": run.embedder.precision,
            **_backend(run.embedder),
            "frames": run.n_frames,
        }

    @app.post("/v1/score", response_model=Scored, responses=_ERRORS, openapi_extra=_SCORE_BODY)
    async def score(request: Request):
        """Score one or more frames (multipart parts named `file`: JPEG, PNG, WebP or BMP) against
        the run: the scores `score-new` would give them, the run's verdict, and the nearest
        stored frames. Nothing is stored."""
        run = scorer.run()
        form = await read_form(
            request.headers, request.stream(), settings.max_upload_bytes, settings.max_upload_files
        )
        loop = asyncio.get_running_loop()
        times = form.times or [None] * len(form.files)
        uploads = await asyncio.gather(
            *(
                loop.run_in_executor(
                    decoders, decode_upload, part, when, settings, run.embedder.input_size
                )
                for part, when in zip(form.files, times)
            )
        )
        queued = time.monotonic()
        for upload in uploads:
            upload.queued_at = queued
        run_id, results = await batcher.submit(list(uploads))
        for result in results:
            for near in result["nearest"]:
                near.update(_links(request, settings, near["frame_id"], run_id))
        return {"run_id": run_id, "results": results}

    @app.get("/v1/runs", response_model=Runs)
    def runs():
        """The complete analysis runs with a saved fit (newest first), and which is served."""
        serving = scorer.loaded.run_id if scorer.loaded is not None else None
        with store.connect(scorer.db, read_only=True) as con:
            rows = sa.fitted_runs(con)
        return {
            "runs": [
                {
                    "run_id": int(r.run_id),
                    "model": r.model,
                    "n_frames": _int(r.n_frames),
                    "started_at": _iso(r.started_at),
                    "finished_at": _iso(r.finished_at),
                    "code_version": r.code_version,
                    "serving": int(r.run_id) == serving,
                }
                for r in rows.itertuples(index=False)
            ]
        }

    @app.get("/v1/frames/{frame_id}", response_model=FrameInfo, responses={404: {"model": Problem}})
    def frame(frame_id: int, request: Request):
        """A stored frame: its file, time, image statistics, weather, its cluster and scores
        in the run served (the newest complete run before one is loaded), its review."""
        run_id = scorer.loaded.run_id if scorer.loaded is not None else None
        with store.connect(scorer.db, read_only=True) as con:
            run_id = run_id if run_id is not None else facts.latest_run_id(con)
            detail = facts.frame_detail(con, frame_id, run_id)
            if detail is None:
                return _not_found(frame_id)
            scores = facts.scores_for(con, run_id, [frame_id])
        return {
            "frame_id": frame_id,
            **{key: _plain(detail.get(key)) for key in _FRAME_FACTS},
            "weather": (
                {
                    key: _plain(
                        detail.get(f"weather_{key}" if key in ("station", "observed_at") else key)
                    )
                    for key in _WEATHER
                }
                if _plain(detail.get("weather_station")) is not None
                else None
            ),
            "run_id": run_id,
            "cluster": _int(detail.get("cluster")),
            "scores": {
                row.detector: {
                    "score": _plain(row.score),
                    "percentile": _plain(row.score_pct),
                    "is_outlier": _plain(row.is_outlier),
                }
                for row in scores.itertuples(index=False)
            },
            "review": (
                {
                    "verdict": detail["verdict"],
                    "note": _plain(detail.get("review_note")),
                    "reviewed_at": _plain(detail.get("reviewed_at")),
                }
                if _plain(detail.get("verdict")) is not None
                else None
            ),
            **_links(request, settings, frame_id, run_id),
        }

    @app.get(
        "/v1/frames/{frame_id}/thumbnail",
        name="thumbnail",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}}, "description": "the stored thumbnail"},
            404: {"model": Problem},
        },
    )
    def thumbnail(frame_id: int):
        """A stored frame's thumbnail (JPEG, ~256 px long side)."""
        with store.connect(scorer.db, read_only=True) as con:
            jpeg = facts.thumbnails(con, [frame_id]).get(frame_id)
        if jpeg is None:
            return _not_found(frame_id)
        return Response(jpeg, media_type="image/jpeg")

    return app


async def _poll(scorer: Scorer, every: float) -> None:
    """Look for a newer complete run every `every` seconds (in a thread: loading a run and
    building its model take a while; the loaded run keeps serving meanwhile)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        try:
            await loop.run_in_executor(None, scorer.refresh)
        except store.StoreError as exc:  # busy or unreadable now: the next look tries again
            log.warning("serve: could not look for a newer run: %s", exc)
        except Exception:  # the loaded run keeps serving; the next look tries again
            log.exception("serve: looking for a newer run failed")


def _links(request: Request, settings: Settings, frame_id: int, run_id: int | None) -> dict:
    page = (
        f"{settings.dashboard_url.rstrip('/')}/{DASHBOARD_FRAME_PAGE}"
        f"?{DASHBOARD_FRAME_KEY}={frame_id}" + (f"&run={run_id}" if run_id is not None else "")
    )
    return {
        "thumbnail_url": str(request.url_for("thumbnail", frame_id=frame_id)),
        "dashboard_url": page,
    }


def _not_found(frame_id: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"no frame {frame_id} in the store", "problem": "not_found"}, status_code=404
    )


def _plain(value):
    """A JSON-ready value: NaN/NaT -> None, timestamps -> ISO text, numpy -> Python."""
    import pandas as pd

    if value is None:
        return None
    if isinstance(value, (pd.Timestamp,)) or hasattr(value, "isoformat"):
        return None if pd.isna(value) else value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    return value.item() if hasattr(value, "item") else value


def _int(value) -> int | None:
    value = _plain(value)
    return None if value is None else int(value)


def _iso(value) -> str | None:
    return _plain(value)
