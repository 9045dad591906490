"""`serve`: a real uvicorn server on a free 127.0.0.1 port and real HTTP, against a store the
pipeline made from demo frames (`pixels` model): every route, the same scores as `score-new`,
bad input followed by a good request, the token, a newer run, concurrent clients."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from pipeline.serve import build
from pipeline.serve.app import DASHBOARD_FRAME_KEY, DASHBOARD_FRAME_PAGE
from pipeline.settings import Settings
from tests.conftest import REPO
from tests.serving import expect_continue, get, http, multipart, running_server, score

DETECTORS_EXACT = (
    "iforest",
    "lof",
    "knn",
    "ecod",
    "copod",
    "hbos",
    "temporal",
    "same_time",
    "dark",
    "overexposed",
    "blurry",
    "low_information",
    "haze",
)


@pytest.fixture(scope="module")
def served(serving_store, tmp_path_factory):
    """One server for the module (reads only), on a private copy of the demo store."""
    db = serving_store.copy(tmp_path_factory.mktemp("served"))
    before = _digest(db)
    app = build(db, serving_store.settings.replace(serve_batch_ms=40.0))
    with running_server(app) as url:
        yield url, app, db
    assert _digest(db) == before, "serve wrote to the store"
    assert not db.with_name(db.name + ".wal").exists()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_route_answers_json_with_the_documented_fields(served, serving_store):
    url, _, _ = served
    health = get(url, "/v1/health")
    assert health.status == 200
    assert health.json() == {
        "status": "ok",
        "run_id": 1,
        "model": "pixels",
        "precision": "float32",
        "backend": None,  # `pixels` runs without Keras
        "gpus": [],
        "frames": health.json()["frames"],
    }
    assert health.json()["frames"] >= 60

    runs = get(url, "/v1/runs").json()["runs"]
    assert [(r["run_id"], r["model"], r["serving"]) for r in runs] == [(1, "pixels", True)]

    frame = get(url, "/v1/frames/3").json()
    assert frame["frame_id"] == 3 and frame["run_id"] == 1 and frame["path"].endswith(".jpg")
    assert frame["taken_at"].startswith("2024-04-") and frame["daylight"] in (
        "day",
        "twilight",
        "night",
    )
    assert set(frame["scores"]) >= {"consensus", "lof", "background"}
    assert 0 <= frame["scores"]["lof"]["percentile"] <= 1
    assert frame["thumbnail_url"] == f"{url}/v1/frames/3/thumbnail"
    assert frame["dashboard_url"] == "http://localhost:8501/frame?frame=3&run=1"
    assert frame["review"] is None
    assert get(url, "/v1/frames/999999").status == 404
    assert get(url, "/v1/frames/999999").json()["problem"] == "not_found"

    thumb = get(url, "/v1/frames/3/thumbnail")
    assert thumb.status == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.body)).size[0] <= 256

    docs = get(url, "/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()
    spec = get(url, "/openapi.json").json()
    assert {
        "/v1/health",
        "/v1/score",
        "/v1/runs",
        "/v1/frames/{frame_id}",
        "/v1/frames/{frame_id}/thumbnail",
    } <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]

    reply = score(url, serving_store.new[:1])
    assert reply.status == 200
    body = reply.json()
    assert body["run_id"] == 1 and len(body["results"]) == 1
    result = body["results"][0]
    assert set(result) == {
        "filename",
        "verdict",
        "too_far",
        "cluster",
        "scores",
        "nearest",
        "taken_at",
        "seconds",
    }
    assert result["filename"] == serving_store.new[0].name
    assert result["verdict"] in ("junk", "ok") and result["seconds"] > 0
    assert len(result["nearest"]) == 5
    near = result["nearest"][0]
    assert set(near) == {"frame_id", "taken_at", "distance", "thumbnail_url", "dashboard_url"}
    assert near["thumbnail_url"] == f"{url}/v1/frames/{near['frame_id']}/thumbnail"
    assert get(url, f"/v1/frames/{near['frame_id']}/thumbnail").status == 200
    distances = [n["distance"] for n in result["nearest"]]
    assert distances == sorted(distances)


def test_dashboard_links_point_at_the_frame_page():
    from dashboard.pages import page

    assert page("Frame").url_path == DASHBOARD_FRAME_PAGE
    assert DASHBOARD_FRAME_KEY in page("Frame").url_keys


def test_scores_are_those_score_new_gives_the_same_files(served, serving_store, tmp_path):
    """Several files in one request are scored together, as a folder is by score-new; one file
    alone as a folder of one."""
    from pipeline.score_new import score_new

    url, _, _ = served
    for files in (serving_store.new, serving_store.new[2:3]):
        folder = tmp_path / f"new{len(files)}"
        folder.mkdir()
        for path in files:
            (folder / path.name).write_bytes(path.read_bytes())
        db = serving_store.copy(tmp_path / f"copy{len(files)}")
        report = score_new(folder, db, serving_store.settings, progress=False).frames
        assert list(report["path"]) == [p.name for p in files]  # frame_id order = name order

        reply = score(url, files)
        assert reply.status == 200, reply.body
        results = reply.json()["results"]
        assert [r["filename"] for r in results] == [p.name for p in files]
        by_path = report.set_index("path")  # by name: keys like cause:quality are no attributes
        for row, result in zip(report.itertuples(index=False), results):
            scores = by_path.loc[result["filename"]]
            for key, values in result["scores"].items():
                expected = scores[key]
                if np.isfinite(expected):
                    assert values["score"] == pytest.approx(expected, rel=1e-9, abs=1e-12), key
                else:
                    assert values["score"] is None, key
                assert values["percentile"] == pytest.approx(scores[f"{key}_pct"]), key
            assert result["verdict"] == ("junk" if row.is_outlier else "ok")
            assert result["too_far"] == bool(row.too_far)
            assert result["cluster"] == row.cluster
            assert result["nearest"][0]["frame_id"] == row.nearest_frame_id
            assert result["nearest"][0]["distance"] == pytest.approx(row.nearest_distance)
            assert result["taken_at"].startswith("2024-04-")  # from the EXIF


def test_taken_at_field_overrides_the_exif_time(served, serving_store):
    url, _, _ = served
    exif = score(url, serving_store.new[:1]).json()["results"][0]
    given = score(url, serving_store.new[:1], times=["2024-04-03T03:00:00"]).json()["results"][0]
    assert exif["taken_at"] != given["taken_at"] == "2024-04-03T03:00:00"
    # with an offset the instant is fixed; the wall clock is the camera's (Europe/London, BST)
    utc = score(url, serving_store.new[:1], times=["2024-04-03T02:00:00Z"]).json()["results"][0]
    assert utc["taken_at"] == "2024-04-03T03:00:00"
    assert utc["scores"]["same_time"] == given["scores"]["same_time"]
    assert given["scores"]["same_time"] != exif["scores"]["same_time"]


def test_a_webp_upload_is_scored_as_the_png_of_the_same_pixels(served, serving_store):
    """WebP frames are read as ingest reads them: a lossless WebP and a PNG of one picture get
    the same scores and neighbours."""
    url, _, _ = served
    picture = Image.open(serving_store.new[0]).convert("RGB")
    encoded = {}
    for name, fmt, options in (("a.png", "PNG", {}), ("a.webp", "WEBP", {"lossless": True})):
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        encoded[name] = buffer.getvalue()
    replies = {
        name: score(url, [(name, data)], times=["2024-04-05T12:00:00"])
        for name, data in encoded.items()
    }
    assert {r.status for r in replies.values()} == {200}
    png, webp = (replies[n].json()["results"][0] for n in ("a.png", "a.webp"))
    assert webp["scores"] == png["scores"] and webp["nearest"] == png["nearest"]
    assert webp["verdict"] == png["verdict"]


def _bomb(jpeg: bytes) -> bytes:
    """A small JPEG whose header claims 60000 x 60000 pixels."""
    data = bytearray(jpeg)
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, 60000, 60000)
    return bytes(data)


@pytest.fixture(scope="module")
def strict(serving_store, tmp_path_factory):
    """A server with small limits: files of at most 300 kB, three files per request."""
    db = serving_store.copy(tmp_path_factory.mktemp("strict"))
    app = build(db, serving_store.settings.replace(max_upload_bytes=300_000, max_upload_files=3))
    with running_server(app) as url:
        yield url


def _bad_requests(good: bytes):
    noise = np.random.default_rng(0).integers(0, 255, 400_000, dtype=np.uint8).tobytes()
    return {
        "non-image": ([("notes.jpg", b"a text file, not a picture\n")], 415, "not_an_image"),
        "truncated": ([("cut.jpg", good[: len(good) // 2])], 422, "truncated"),
        "empty part": ([("empty.jpg", b"")], 400, "empty"),
        "decompression bomb": ([("bomb.jpg", _bomb(good))], 413, "too_many_pixels"),
        "over the size limit": ([("huge.jpg", good[:4] + noise)], 413, "too_big"),
        "too many files": ([(f"f{i}.jpg", good) for i in range(4)], 413, "too_many_files"),
        "gif": ([("anim.jpg", _gif())], 415, "unsupported_format"),
    }


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "case",
    [
        "non-image",
        "truncated",
        "empty part",
        "decompression bomb",
        "over the size limit",
        "too many files",
        "gif",
    ],
)
def test_bad_input_is_a_clear_4xx_and_the_next_request_is_served(strict, serving_store, case):
    good = serving_store.new[0].read_bytes()
    files, status, problem = _bad_requests(good)[case]
    reply = score(strict, files)
    assert reply.status == status, reply.body
    body = reply.json()
    assert body["problem"] == problem and body["detail"]
    if len(files) == 1:
        assert body["filename"] == files[0][0] and body["detail"].startswith(files[0][0])
    after = score(strict, [(serving_store.new[0].name, good)])
    assert after.status == 200 and len(after.json()["results"]) == 1


def test_requests_without_files_or_multipart_are_refused_clearly(strict, serving_store):
    good = serving_store.new[0].read_bytes()
    body, content_type = multipart([("image", "x.jpg", good)])
    reply = http(f"{strict}/v1/score", "POST", body, {"Content-Type": content_type})
    assert reply.status == 400 and reply.json()["problem"] == "no_file"
    assert "'image'" in reply.json()["detail"] and "file" in reply.json()["detail"]

    reply = http(f"{strict}/v1/score", "POST", good, {"Content-Type": "image/jpeg"})
    assert reply.status == 415 and reply.json()["problem"] == "not_multipart"

    reply = score(strict, [("a.jpg", good)], times=["yesterday at noon"])
    assert reply.status == 422 and reply.json()["problem"] == "bad_taken_at"
    reply = score(strict, [("a.jpg", good), ("b.jpg", good)], times=["2024-04-02T12:00:00"])
    assert reply.status == 400 and "one per file" in reply.json()["detail"]
    assert score(strict, [("a.jpg", good)]).status == 200


def test_a_wrong_path_method_or_frame_id_is_refused_in_the_documented_shape(served):
    """Every refusal is {"detail": text, "problem": code}, also FastAPI's own (an id that is
    not a number, a path or method that is not a route)."""
    url, _, _ = served
    reply = get(url, "/v1/frames/abc")
    assert reply.status == 422
    assert reply.json() == {
        "detail": "frame_id in the path: input should be a valid integer, unable to parse "
        "string as an integer (got 'abc'); frame ids are whole numbers, e.g. /v1/frames/131",
        "problem": "bad_parameter",
    }
    reply = get(url, "/v1/frame/3")
    assert reply.status == 404 and reply.json()["problem"] == "not_found"
    assert reply.json()["detail"].startswith("no route GET /v1/frame/3; the routes are ")
    assert "GET /v1/frames/{frame_id}" in reply.json()["detail"]
    reply = http(f"{url}/v1/score", "GET")
    assert reply.status == 405 and reply.headers["allow"] == "POST"
    assert reply.json()["problem"] == "method_not_allowed"
    assert reply.json()["detail"].startswith("GET /v1/score is not allowed: use POST")
    assert get(url, "/v1/health").status == 200


def test_a_query_parameter_is_refused_not_silently_ignored(served, serving_store):
    """`?taken_at=` on the URL would otherwise score with the EXIF time, not the one sent."""
    url, _, _ = served
    good = serving_store.new[0]
    body, content_type = multipart([("file", good.name, good.read_bytes())])
    reply = http(
        f"{url}/v1/score?taken_at=2024-04-02T12:00:00", "POST", body, {"Content-Type": content_type}
    )
    assert reply.status == 400
    assert reply.json() == {
        "detail": "unknown query parameter 'taken_at': /v1/score takes none; send the "
        "request without it (a frame's time goes as a `taken_at` form field after its "
        "`file` part)",
        "problem": "unknown_parameter",
    }
    reply = get(url, "/v1/runs?limit=5&order=asc")
    assert reply.status == 400 and reply.json()["problem"] == "unknown_parameter"
    assert "parameters 'limit', 'order'" in reply.json()["detail"]
    assert get(url, "/v1/health?probe=1").status == 200  # load balancers' probes pass
    assert get(url, "/v1/runs").status == 200


def test_an_oversized_request_is_refused_before_its_body_is_sent(served):
    """curl asks `Expect: 100-continue` for big uploads: a 2 GiB one gets 413 at once."""
    url, _, _ = served
    assert Settings().max_upload_bytes == 50 * 2**20
    reply = expect_continue(url, 2 * 2**30)
    assert reply.status == 413 and b"request_too_big" in reply.body
    assert get(url, "/v1/health").status == 200


def test_a_token_guards_every_route_but_health(serving_store, tmp_path):
    db = serving_store.copy(tmp_path)
    with running_server(build(db, serving_store.settings, token="s3cret-token")) as url:
        assert get(url, "/v1/health").status == 200
        for path in (
            "/v1/runs",
            "/v1/frames/3",
            "/v1/frames/3/thumbnail",
            "/docs",
            "/openapi.json",
        ):
            refused = get(url, path)
            assert refused.status == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert refused.json()["problem"] == "unauthorized"
            assert get(url, path, token="wrong").status == 401
            assert get(url, path, token="s3cret-token").status == 200
        assert score(url, serving_store.new[:1]).status == 401
        assert score(url, serving_store.new[:1], token="s3cret-tokenX").status == 401
        said = {
            header: http(url + "/v1/runs", headers={"Authorization": header}).json()["detail"]
            for header in ("Bearer wrong", "Basic czNjcmV0LXRva2Vu", "s3cret-token", "")
        }
        assert said["Bearer wrong"].startswith("a wrong token: send the header")
        assert said["Basic czNjcmV0LXRva2Vu"].startswith("the Basic scheme, not Bearer: send")
        assert said["s3cret-token"].startswith("a token without the Bearer scheme: send")
        assert "s3cret" not in said["s3cret-token"]
        assert said[""].startswith("no token: send")
        assert score(url, serving_store.new[:1], token="s3cret-token").status == 200


def test_a_store_without_a_run_answers_503_saying_to_run_analyze(serving_store, tmp_path):
    from pipeline.ingest import ingest_folder

    db = tmp_path / "fresh.duckdb"
    folder = tmp_path / "few"
    folder.mkdir()
    for path in serving_store.new[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    ingest_folder(folder, db, serving_store.settings, progress=False)
    with running_server(build(db, serving_store.settings)) as url:
        health = get(url, "/v1/health")
        assert health.status == 503 and "analyze" in health.json()["detail"]
        assert health.json()["status"] == "unavailable"
        refused = score(url, serving_store.new[:1])
        assert refused.status == 503 and refused.json()["problem"] == "no_run"
        assert get(url, "/v1/frames/1").status == 200  # the store is still readable


def test_it_moves_to_a_newer_run_without_restart_unless_pinned(serving_store, tmp_path):
    db = serving_store.copy(tmp_path)
    settings = serving_store.settings.replace(serve_reload_seconds=0.2)
    with (
        running_server(build(db, settings)) as url,
        running_server(build(db, settings, run_id=1)) as pinned,
    ):
        assert get(url, "/v1/health").json()["run_id"] == 1
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        analyzed = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "analyze",
                "--db",
                str(db),
                "--model",
                "pixels",
                "--quiet",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert analyzed.returncode == 0, analyzed.stderr[-2000:]
        deadline = time.monotonic() + 60
        while get(url, "/v1/health").json()["run_id"] != 2:
            assert time.monotonic() < deadline, "serve did not move to run 2"
            time.sleep(0.2)
        assert score(url, serving_store.new[:1]).json()["run_id"] == 2
        runs = {r["run_id"]: r["serving"] for r in get(url, "/v1/runs").json()["runs"]}
        assert runs == {2: True, 1: False}
        assert get(pinned, "/v1/health").json()["run_id"] == 1
        assert score(pinned, serving_store.new[:1]).json()["run_id"] == 1


def test_concurrent_clients_share_model_passes_and_get_their_own_results(served, serving_store):
    """16 clients at once: each gets the result for its own file (as when it came alone), and
    the service scored them in fewer passes than requests."""
    url, app, _ = served
    files = serving_store.new + sorted(serving_store.frames.rglob("*.jpg"))[:10]
    alone = {p.name: score(url, [p]).json()["results"][0] for p in files}
    stats = app.state.batcher.stats
    batches_before = stats.n_batches
    barrier = threading.Barrier(len(files))
    replies: dict[str, dict] = {}

    def client(path):
        barrier.wait()
        reply = score(url, [path])
        assert reply.status == 200
        replies[path.name] = reply.json()["results"][0]

    threads = [threading.Thread(target=client, args=(p,)) for p in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(replies) == set(alone)
    assert stats.n_batches - batches_before < len(files), "no request was batched with another"
    assert stats.max_groups > 1
    for name, result in replies.items():
        expected = alone[name]
        assert result["filename"] == name
        assert result["cluster"] == expected["cluster"]
        assert result["too_far"] == expected["too_far"]
        assert [n["frame_id"] for n in result["nearest"]] == [
            n["frame_id"] for n in expected["nearest"]
        ]
        for key in DETECTORS_EXACT:
            assert result["scores"][key] == expected["scores"][key], (name, key)
        # the background detector's float32 arithmetic differs in its last bits with the
        # other frames of the pass, which can move a frame a few ranks among tied fit scores
        got, want = (r["scores"]["background"]["percentile"] for r in (result, expected))
        assert got == pytest.approx(want, abs=0.06), name
        # ... and the consensus (the sum of the causes) moves by exactly the scene cause's
        # change, every other cause scoring the frame as when it came alone (its percentile
        # among this small fit's 73 frames may move further where their scores bunch)
        for key in ("cause:quality", "cause:camera", "cause:rarity"):
            assert result["scores"][key] == expected["scores"][key], (name, key)
        moved = {
            k: result["scores"][k]["score"] - expected["scores"][k]["score"]
            for k in ("consensus", "cause:scene")
        }
        assert moved["consensus"] == pytest.approx(moved["cause:scene"], abs=1e-9), name


def test_the_cli_refuses_an_empty_token_file(serving_store, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    empty = tmp_path / "empty"
    empty.write_text("  \n")
    refused = CliRunner().invoke(
        cli, ["serve", "--db", str(serving_store.db), "--token-file", str(empty)]
    )
    assert refused.exit_code == 1 and "holds nothing" in refused.output


def test_the_cli_refuses_a_taken_port_or_unknown_host_in_one_line(serving_store):
    from click.testing import CliRunner

    from pipeline.cli import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = CliRunner().invoke(
            cli, ["serve", "--db", str(serving_store.db), "--port", str(port)]
        )
    assert refused.exit_code == 1, refused.output
    assert refused.output.strip() == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; another program "
        "(another serve?) listens there: stop it or give --port N"
    )
    assert "serve " not in refused.output  # refused before the run and model were loaded
    refused = CliRunner().invoke(
        cli, ["serve", "--db", str(serving_store.db), "--host", "no-such-host.invalid"]
    )
    assert refused.exit_code == 1
    assert refused.output.startswith(
        "error: --host no-such-host.invalid: not an address this machine can listen on"
    )


def test_the_cli_serves_until_sigterm(serving_store, tmp_path):
    db = serving_store.copy(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("cli-token\n")
    token_file.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--token-file",
            str(token_file),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(url, "/v1/health").status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.3)
        assert get(url, "/v1/runs", token="cli-token").status == 200
        assert get(url, "/v1/runs").status == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then exits by the signal it got (a clean stop for
    # systemd and other supervisors)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out and "Traceback" not in out
    assert f"http://127.0.0.1:{port}/docs" in out and "bearer token required" in out


def test_the_grid_cache_gives_the_chunks_the_store_gives(serving_store):
    """`serve` keeps the fit frames' decoded thumbnails between requests: the same grids in
    the same order as read from the store, within its memory bound."""
    from pipeline.pixels import GridCache, ThumbnailReader

    ids = np.arange(1, 41, dtype=np.int64)[::-1]
    plain = list(ThumbnailReader(serving_store.db, read_only=True, chunk=16).grids(ids, (32, 18)))
    cache = GridCache(max_bytes=20 * 32 * 18 * 3)
    cached = ThumbnailReader(serving_store.db, read_only=True, chunk=16, cache=cache)
    for _ in range(2):
        again = list(cached.grids(ids, (32, 18)))
        assert len(again) == len(plain)
        for (pos_a, grids_a), (pos_b, grids_b) in zip(plain, again):
            np.testing.assert_array_equal(pos_a, pos_b)
            np.testing.assert_array_equal(grids_a, grids_b)
    assert 0 < cache.n_bytes <= cache.max_bytes


@pytest.mark.keras
def test_health_names_the_keras_backend_of_a_keras_model():
    import importlib.metadata

    from pipeline.models import get_model
    from pipeline.serve.app import _backend

    keras_model = get_model("vgg16-hed").build(pretrained=False)
    version = importlib.metadata.version("tensorflow")
    assert _backend(keras_model) == {"backend": f"tensorflow {version}", "gpus": []}
    assert _backend(get_model("pixels").build()) == {"backend": None, "gpus": []}
