"""Numbered schema migrations and the schema-version check.

Each migration is `(version, name, sql)`. `migrate()` applies the ones a file lacks, each in
its own transaction, and records it in `schema_migrations`; running it again changes nothing.
A file whose newest migration is newer than this code knows is refused with `SchemaError`.
Never edit a migration that has shipped: add a new one at the end.

Numbers need not be contiguous, and a file lacking a number below its newest still gets it:
"lacks" is by number, not "newer than the file's newest". Branches reserve numbers and may land
in any order (4 before 3): a store that got 4 first gets 3 when 3 lands. So a migration must
not depend on a lower-numbered one that may land after it (each adds its own tables or
columns); `MIGRATIONS` stays in numeric order, so a new store applies them 1, 2, 3, 4, ...
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from store.db import CONNECT_CONFIG, SchemaError, scalar

_TABLES = """
CREATE TABLE IF NOT EXISTS settings (
    key         VARCHAR PRIMARY KEY,
    value       VARCHAR NOT NULL,          -- JSON text
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE SEQUENCE IF NOT EXISTS frame_id_seq START 1;

CREATE TABLE IF NOT EXISTS frames (
    frame_id        BIGINT PRIMARY KEY,
    path            VARCHAR NOT NULL UNIQUE,   -- relative to root, '/' separators
    root            VARCHAR NOT NULL,          -- absolute folder the path is relative to
    taken_at        TIMESTAMP,                 -- camera wall clock
    taken_at_utc    TIMESTAMPTZ,
    time_source     VARCHAR NOT NULL,          -- 'exif' | 'filename' | 'mtime'
    utc_offset_min  INTEGER,                   -- offset used for taken_at -> taken_at_utc
    source_utc      TIMESTAMPTZ,               -- instant fixed by the source itself (EXIF offset, epoch name, mtime)
    width           INTEGER,
    height          INTEGER,
    file_bytes      BIGINT NOT NULL,
    file_mtime      TIMESTAMPTZ NOT NULL,
    content_hash    VARCHAR,                   -- blake2b of the file bytes (finds duplicates)
    mean_luma       DOUBLE,                    -- 0..255
    contrast        DOUBLE,                    -- std of luma, 0..~128
    sharpness       DOUBLE,                    -- variance of the Laplacian of luma
    colorfulness    DOUBLE,                    -- Hasler & Suesstrunk metric
    sun_elevation   DOUBLE,                    -- degrees; NULL without a location
    daylight        VARCHAR,                   -- 'day' | 'twilight' | 'night'
    daylight_source VARCHAR,                   -- 'sun' | 'timezone' | 'brightness'
    ingested_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS thumbnails (
    frame_id  BIGINT PRIMARY KEY,
    jpeg      BLOB NOT NULL,
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS ingest_errors (
    path         VARCHAR NOT NULL,     -- relative to root where possible
    stage        VARCHAR NOT NULL,     -- 'ingest' | 'embed' | 'score-new' ...
    message      VARCHAR NOT NULL,
    root         VARCHAR,
    file_bytes   BIGINT,
    file_mtime   TIMESTAMPTZ,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (path, stage)
);

CREATE TABLE IF NOT EXISTS models (
    model       VARCHAR PRIMARY KEY,   -- registry key, e.g. 'vgg16-hed'
    family      VARCHAR NOT NULL,
    weights     VARCHAR NOT NULL,      -- where the weights came from
    dim         INTEGER NOT NULL,
    input_size  INTEGER,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS embeddings (
    frame_id  BIGINT NOT NULL,
    model     VARCHAR NOT NULL,
    vector    FLOAT[] NOT NULL,
    PRIMARY KEY (frame_id, model)
);

CREATE SEQUENCE IF NOT EXISTS run_id_seq START 1;

CREATE TABLE IF NOT EXISTS analysis_runs (
    run_id        BIGINT PRIMARY KEY,
    model         VARCHAR NOT NULL,
    params        JSON NOT NULL,
    status        VARCHAR NOT NULL,     -- 'running' | 'complete' | 'failed'
    n_frames      BIGINT,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ,
    code_version  VARCHAR,
    timings       JSON,                 -- seconds per step
    error         VARCHAR,              -- why a failed run failed
    pid           INTEGER,              -- process that ran it (finds runs a kill left 'running')
    host          VARCHAR               -- machine that process ran on
);

CREATE TABLE IF NOT EXISTS clusters (
    run_id    BIGINT NOT NULL,
    frame_id  BIGINT NOT NULL,
    cluster   INTEGER NOT NULL,         -- -1 = noise
    map_x     DOUBLE,
    map_y     DOUBLE,
    PRIMARY KEY (run_id, frame_id)
);

CREATE TABLE IF NOT EXISTS outlier_scores (
    run_id      BIGINT NOT NULL,
    detector    VARCHAR NOT NULL,
    frame_id    BIGINT NOT NULL,
    score       DOUBLE,                 -- higher = more abnormal
    score_pct   DOUBLE,                 -- 0..1 rank within the run
    is_outlier  BOOLEAN,
    PRIMARY KEY (run_id, detector, frame_id)
);

CREATE TABLE IF NOT EXISTS neighbors (
    run_id       BIGINT NOT NULL,
    frame_id     BIGINT NOT NULL,
    rank         INTEGER NOT NULL,      -- 1 = nearest
    neighbor_id  BIGINT NOT NULL,
    distance     DOUBLE NOT NULL,       -- in the run's PCA space
    PRIMARY KEY (run_id, frame_id, rank)
);

CREATE TABLE IF NOT EXISTS fitted_runs (
    run_id      BIGINT PRIMARY KEY,
    artifact    BLOB NOT NULL,          -- pickled scaler, PCA, detectors, neighbour index
    versions    JSON NOT NULL,          -- library versions it was fitted with
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS weather (
    station           VARCHAR NOT NULL,
    observed_at       TIMESTAMPTZ NOT NULL,
    temperature_c     DOUBLE,
    precipitation_mm  DOUBLE,
    cloud_cover_pct   DOUBLE,
    wind_speed_ms     DOUBLE,
    visibility_km     DOUBLE,
    weather_code      INTEGER,          -- WMO code when the source has one
    condition         VARCHAR,          -- 'clear' | 'cloudy' | 'rain' | 'snow' | 'fog' | ...
    source            VARCHAR,
    PRIMARY KEY (station, observed_at)
);

CREATE TABLE IF NOT EXISTS reviews (
    frame_id     BIGINT PRIMARY KEY,
    verdict      VARCHAR NOT NULL CHECK (verdict IN ('junk', 'keep')),
    note         VARCHAR,
    reviewed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS ground_truth (
    frame_id    BIGINT PRIMARY KEY,
    is_anomaly  BOOLEAN NOT NULL,
    kind        VARCHAR                 -- e.g. 'person', 'fog', 'normal'
);
"""

# Readers' views. `latest_run` is the newest complete analysis run; `frame_weather` is each
# frame's latest observation at or before it, within `weather_tolerance_minutes` (setting,
# default 90), from the `weather_station` setting or else the station with most rows.
# Each frame's observation: the view's text, and `store.weather.refresh_join`'s for a few frames
# (`frame_weather_join(frames=...)`: the same join over those frames alone, with the
# observations from the latest one at or before the earliest of them, the only ones an ASOF
# match of theirs can be).
FRAME_WEATHER_JOIN = """
WITH w AS (
    SELECT * FROM weather WHERE station = (SELECT station FROM weather_station_used){weather}
), tol AS (
    SELECT to_seconds(CAST(60 * coalesce(
        (SELECT TRY_CAST(value AS DOUBLE) FROM settings WHERE key = 'weather_tolerance_minutes'),
        90.0) AS BIGINT)) AS span
), j AS (
    SELECT f.frame_id, w.*,
           coalesce(f.taken_at_utc - w.observed_at <= (SELECT span FROM tol), FALSE) AS within
    FROM (SELECT frame_id, taken_at_utc FROM frames WHERE taken_at_utc IS NOT NULL{frames}) f
    ASOF LEFT JOIN w ON f.taken_at_utc >= w.observed_at
)
SELECT frame_id,
       CASE WHEN within THEN station END AS station,
       CASE WHEN within THEN observed_at END AS weather_observed_at,
       CASE WHEN within THEN temperature_c END AS temperature_c,
       CASE WHEN within THEN precipitation_mm END AS precipitation_mm,
       CASE WHEN within THEN cloud_cover_pct END AS cloud_cover_pct,
       CASE WHEN within THEN wind_speed_ms END AS wind_speed_ms,
       CASE WHEN within THEN visibility_km END AS visibility_km,
       CASE WHEN within THEN weather_code END AS weather_code,
       CASE WHEN within THEN coalesce(condition, 'unknown') ELSE 'unknown' END AS condition
FROM j;
"""


def frame_weather_join(frames: str | None = None) -> str:
    """`FRAME_WEATHER_JOIN` over every frame (the view), or over the frames whose ids the table
    or view named `frames` holds (a name from the store's code, never from input)."""
    if frames is None:
        return FRAME_WEATHER_JOIN.format(weather="", frames="")
    ids = f"frame_id IN (SELECT frame_id FROM {frames})"
    first = f"(SELECT min(taken_at_utc) FROM frames WHERE {ids})"
    weather = (
        " AND observed_at >= coalesce((SELECT max(observed_at) FROM weather WHERE station = "
        f"(SELECT station FROM weather_station_used) AND observed_at <= {first}), "
        "'-infinity'::TIMESTAMPTZ)"
    )
    return FRAME_WEATHER_JOIN.format(weather=weather, frames=f" AND {ids}")


_FRAME_WEATHER_JOIN = frame_weather_join()

_FRAME_FACTS = """
CREATE OR REPLACE VIEW frame_facts AS
SELECT f.*,
       lr.run_id,
       c.cluster, c.map_x, c.map_y,
       s.score AS consensus_score,
       s.score_pct AS consensus_pct,
       s.is_outlier AS consensus_is_outlier,
       fw.station AS weather_station,
       fw.weather_observed_at,
       coalesce(fw.condition, 'unknown') AS condition,
       fw.temperature_c, fw.precipitation_mm, fw.cloud_cover_pct, fw.wind_speed_ms,
       fw.visibility_km,
       r.verdict, r.note AS review_note, r.reviewed_at
FROM frames f
LEFT JOIN latest_run lr ON TRUE
LEFT JOIN clusters c ON c.run_id = lr.run_id AND c.frame_id = f.frame_id
LEFT JOIN outlier_scores s
       ON s.run_id = lr.run_id AND s.frame_id = f.frame_id AND s.detector = 'consensus'
LEFT JOIN frame_weather fw ON fw.frame_id = f.frame_id
LEFT JOIN reviews r ON r.frame_id = f.frame_id;
"""

_VIEWS = (
    """
CREATE OR REPLACE VIEW latest_run AS
SELECT run_id, model FROM analysis_runs
WHERE status = 'complete'
ORDER BY finished_at DESC, run_id DESC
LIMIT 1;

CREATE OR REPLACE VIEW weather_station_used AS
SELECT coalesce(
    (SELECT json_extract_string(value, '$') FROM settings WHERE key = 'weather_station'),
    (SELECT station FROM weather GROUP BY station ORDER BY count(*) DESC, station LIMIT 1)
) AS station;

"""
    + "CREATE OR REPLACE VIEW frame_weather AS\n"
    + _FRAME_WEATHER_JOIN
    + """
"""
    + _FRAME_FACTS
    + """"""
)

# Frames and ingest errors are keyed by where the file is (`location`: its absolute path with
# symlinks resolved), not by the path relative to the folder that was ingested: two memory cards
# both holding IMG_0001.jpg are two frames, and one file reached from a parent folder is one.
# DuckDB cannot drop a UNIQUE constraint, so both tables are rebuilt; the views that read
# `frames` are dropped first and made again (they are the same as in migration 1).
_LOCATIONS = (
    """
DROP VIEW IF EXISTS frame_facts;
DROP VIEW IF EXISTS frame_weather;

CREATE TABLE frames_v2 (
    frame_id        BIGINT PRIMARY KEY,
    path            VARCHAR NOT NULL,          -- relative to root, '/' separators
    root            VARCHAR NOT NULL,          -- absolute folder the path is relative to
    location        VARCHAR NOT NULL UNIQUE,   -- the file's absolute path, symlinks resolved
    taken_at        TIMESTAMP,
    taken_at_utc    TIMESTAMPTZ,
    time_source     VARCHAR NOT NULL,          -- 'exif' | 'filename' | 'mtime' | 'none'
    utc_offset_min  INTEGER,
    source_utc      TIMESTAMPTZ,
    width           INTEGER,
    height          INTEGER,
    file_bytes      BIGINT NOT NULL,
    file_mtime      TIMESTAMPTZ NOT NULL,
    content_hash    VARCHAR,
    mean_luma       DOUBLE,
    contrast        DOUBLE,
    sharpness       DOUBLE,
    colorfulness    DOUBLE,
    sun_elevation   DOUBLE,
    daylight        VARCHAR,
    daylight_source VARCHAR,
    ingested_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO frames_v2
SELECT frame_id, path, root, rtrim(root, '/') || '/' || path, taken_at, taken_at_utc,
       time_source, utc_offset_min, source_utc, width, height, file_bytes, file_mtime,
       content_hash, mean_luma, contrast, sharpness, colorfulness, sun_elevation, daylight,
       daylight_source, ingested_at
FROM frames;
DROP TABLE frames;
ALTER TABLE frames_v2 RENAME TO frames;

CREATE TABLE ingest_errors_v2 (
    location     VARCHAR NOT NULL,     -- absolute path of the file (or folder), symlinks resolved
    stage        VARCHAR NOT NULL,     -- 'ingest' | 'timestamp' | 'embed' | 'changed' ...
    path         VARCHAR NOT NULL,     -- relative to root where possible
    message      VARCHAR NOT NULL,
    root         VARCHAR,
    file_bytes   BIGINT,
    file_mtime   TIMESTAMPTZ,
    occurred_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (location, stage)
);
INSERT INTO ingest_errors_v2
SELECT CASE WHEN root IS NULL THEN path ELSE rtrim(root, '/') || '/' || path END, stage, path,
       message, root, file_bytes, file_mtime, occurred_at
FROM ingest_errors;
DROP TABLE ingest_errors;
ALTER TABLE ingest_errors_v2 RENAME TO ingest_errors;
"""
    + _VIEWS
)

# Incidents and the per-run aggregates `analyze` writes with each run (`store.aggregates`), so
# the dashboard's pages read a few thousand rows instead of every frame.
_AGGREGATES = """
CREATE TABLE incidents (
    run_id       BIGINT NOT NULL,
    incident_id  INTEGER NOT NULL,       -- 1, 2, ... in time order within the run
    started_at   TIMESTAMP NOT NULL,     -- camera clock: the first flagged frame
    ended_at     TIMESTAMP NOT NULL,     -- camera clock: the last flagged frame
    duration_s   DOUBLE NOT NULL,        -- ended_at - started_at
    n_frames     INTEGER NOT NULL,       -- frames from the first to the last flagged one
    n_flagged    INTEGER NOT NULL,       -- of those, flagged by the consensus
    cause        VARCHAR NOT NULL,       -- plain cause carrying most of the evidence
    cause_share  DOUBLE,                 -- that cause's share of the evidence, 0..1
    peak_score   DOUBLE,                 -- highest consensus score (higher = more abnormal)
    peak_pct     DOUBLE,                 -- its percentile, 0..1
    frame_id     BIGINT NOT NULL,        -- representative frame: the peak's
    PRIMARY KEY (run_id, incident_id)
);

CREATE TABLE incident_frames (
    run_id       BIGINT NOT NULL,
    frame_id     BIGINT NOT NULL,
    incident_id  INTEGER NOT NULL,
    is_flagged   BOOLEAN NOT NULL,       -- flagged by the consensus (else a frame in a gap)
    taken_at     TIMESTAMP,              -- the frame's, when the run was written
    daylight     VARCHAR,
    cluster      INTEGER,
    PRIMARY KEY (run_id, frame_id)
);

-- Frames per camera-clock period x hour of day x daylight x cluster (NULL where unknown;
-- frames not in the run have cluster NULL). A period is a day, a week (from Monday) or a month:
-- run_aggregates.cell_grain, the finest giving at most 400 periods over the frames.
CREATE TABLE run_frame_cells (
    run_id    BIGINT NOT NULL,
    period    DATE,                       -- first day of the period
    hour      SMALLINT,
    daylight  VARCHAR,
    cluster   INTEGER,
    n_frames  BIGINT NOT NULL,
    first_at  TIMESTAMP,
    last_at   TIMESTAMP
);

-- Per detector, the same cells over the run's frames: scored, flagged, sums for the means.
CREATE TABLE run_detector_cells (
    run_id     BIGINT NOT NULL,
    detector   VARCHAR NOT NULL,
    period     DATE,
    hour       SMALLINT,
    daylight   VARCHAR,
    cluster    INTEGER,
    n_rows     BIGINT NOT NULL,           -- frames with a row (score or not)
    n_flagged  BIGINT NOT NULL,
    n_pct      BIGINT NOT NULL,           -- frames with a percentile (and a score)
    sum_pct    DOUBLE,
    sum_score  DOUBLE,
    max_score  DOUBLE
);

-- A fixed pseudo-random sample of the run's frames (those with the smallest hash(frame_id)),
-- for the scatter plots.
CREATE TABLE run_samples (
    run_id    BIGINT NOT NULL,
    frame_id  BIGINT NOT NULL,
    taken_at  TIMESTAMP,
    daylight  VARCHAR,
    cluster   INTEGER,
    map_x     DOUBLE,
    map_y     DOUBLE,
    PRIMARY KEY (run_id, frame_id)
);

-- Every detector's scores of the frames in run_samples.
CREATE TABLE run_sample_scores (
    run_id      BIGINT NOT NULL,
    detector    VARCHAR NOT NULL,
    frame_id    BIGINT NOT NULL,
    score       DOUBLE,
    score_pct   DOUBLE,
    is_outlier  BOOLEAN,
    PRIMARY KEY (run_id, detector, frame_id)
);

-- Each detector's highest-scoring frames, in rank order.
CREATE TABLE run_top (
    run_id    BIGINT NOT NULL,
    detector  VARCHAR NOT NULL,
    rank      INTEGER NOT NULL,           -- 1 = highest score
    frame_id  BIGINT NOT NULL,
    score     DOUBLE,
    score_pct DOUBLE,
    is_outlier BOOLEAN,
    taken_at  TIMESTAMP,
    daylight  VARCHAR,
    cluster   INTEGER,
    PRIMARY KEY (run_id, detector, rank)
);

-- One row per run that has aggregates: what frames they describe, and the archive mosaic.
CREATE TABLE run_aggregates (
    run_id             BIGINT PRIMARY KEY,
    store_frames       BIGINT NOT NULL,   -- frames in the store when they were written
    store_max_frame_id BIGINT,
    run_frames         BIGINT NOT NULL,   -- frames in the run then (score-new adds more)
    is_stale           BOOLEAN NOT NULL DEFAULT FALSE,  -- frame times or pixels changed since
    cell_grain         VARCHAR NOT NULL,  -- the cells' period: 'day' | 'week' | 'month'
    first_day          DATE,              -- the store's first and last camera-clock day then
    last_day           DATE,
    n_sample           INTEGER NOT NULL,  -- frames in run_samples
    n_top              INTEGER NOT NULL,  -- frames per detector in run_top
    mosaic_png         BLOB,              -- RGBA atlas: a row of 24 hour cells per day
    mosaic_days        DATE[],            -- the first day of each row
    mosaic_outlined    INTEGER[],         -- cells (row * 24 + hour) mostly in incidents
    mosaic_cell_width  INTEGER,
    mosaic_cell_height INTEGER,
    mosaic_info        JSON,              -- frames used, decoded for it alone, seconds
    written_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

# The numeric precision a model ran at (float32, bfloat16, float16): per vector, since a store
# may hold one model's vectors made at two precisions (measured to rank frames the same), and on
# the model row, the precision of its latest embedding. Every vector before this was float32.
_PRECISION = """
ALTER TABLE embeddings ADD COLUMN precision VARCHAR NOT NULL DEFAULT 'float32';
ALTER TABLE models ADD COLUMN precision VARCHAR NOT NULL DEFAULT 'float32';
"""

# Each frame's local contrast (the mean 9x9 standard deviation of the stored thumbnail's luma,
# which the `flat` detector compares with the camera's own good frames). Frames ingested before
# it have NULL until `analyze` fills them in from their stored thumbnails
# (`pipeline.imagestats.backfill_thumbnail_measures`).
_LOCAL_CONTRAST = """
ALTER TABLE frames ADD COLUMN IF NOT EXISTS local_contrast DOUBLE;
"""

# The weather condition as one more key of a run's aggregates (`store.aggregates`), so a
# weather filter is answered from them as dates, hours, daylight and clusters are: each cell,
# sampled frame, top frame and incident frame carries its frame's condition (the `frame_weather`
# view's, 'unknown' without an observation) as it was when the run was written. Runs written
# before have NULL there and `has_conditions` FALSE: a weather filter scans the frames for them.
# `weather_stale`: observations or the weather join's settings changed since they were written.
_AGGREGATE_CONDITIONS = """
ALTER TABLE run_frame_cells ADD COLUMN condition VARCHAR;
ALTER TABLE run_detector_cells ADD COLUMN condition VARCHAR;
ALTER TABLE run_samples ADD COLUMN condition VARCHAR;
ALTER TABLE run_top ADD COLUMN condition VARCHAR;
ALTER TABLE incident_frames ADD COLUMN condition VARCHAR;
ALTER TABLE run_aggregates ADD COLUMN has_conditions BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE run_aggregates ADD COLUMN weather_stale BOOLEAN NOT NULL DEFAULT FALSE;
"""

# What a gallery card shows, stored with a run's listed frames (`run_top`, `run_samples`,
# `incident_frames`: the frame's path and its weather's temperature and precipitation, as the
# `frame_weather` view gives them), so the pages that draw cards from them join neither
# `frames` nor the weather (`aggregates.cards`); `has_cards` says a run's lists carry them.
# Lists written before are filled in here from the frames and the weather as they are now
# (what a scan shows: a run whose frames or weather changed since is answered by the scan
# anyway, `aggregates.covers`). Each review carries its frame's camera-clock time and daylight
# (`frame_taken_at`, `frame_daylight`; the review writers copy them and the frame writers keep
# them), so counting the reviews a date, hour or daylight filter keeps needs no join either.
_AGGREGATE_CARDS = """
ALTER TABLE run_top ADD COLUMN path VARCHAR;
ALTER TABLE run_top ADD COLUMN temperature_c DOUBLE;
ALTER TABLE run_top ADD COLUMN precipitation_mm DOUBLE;
ALTER TABLE run_samples ADD COLUMN path VARCHAR;
ALTER TABLE run_samples ADD COLUMN temperature_c DOUBLE;
ALTER TABLE run_samples ADD COLUMN precipitation_mm DOUBLE;
ALTER TABLE incident_frames ADD COLUMN path VARCHAR;
ALTER TABLE incident_frames ADD COLUMN temperature_c DOUBLE;
ALTER TABLE incident_frames ADD COLUMN precipitation_mm DOUBLE;
ALTER TABLE run_aggregates ADD COLUMN has_cards BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE reviews ADD COLUMN frame_taken_at TIMESTAMP;
ALTER TABLE reviews ADD COLUMN frame_daylight VARCHAR;

CREATE TEMP TABLE _card_frames AS
SELECT f.frame_id, f.path, fw.temperature_c, fw.precipitation_mm
FROM frames f LEFT JOIN frame_weather fw ON fw.frame_id = f.frame_id
WHERE f.frame_id IN (SELECT frame_id FROM run_top UNION SELECT frame_id FROM run_samples
                     UNION SELECT frame_id FROM incident_frames);
UPDATE run_top SET path = c.path, temperature_c = c.temperature_c,
                   precipitation_mm = c.precipitation_mm
FROM _card_frames c WHERE c.frame_id = run_top.frame_id;
UPDATE run_samples SET path = c.path, temperature_c = c.temperature_c,
                       precipitation_mm = c.precipitation_mm
FROM _card_frames c WHERE c.frame_id = run_samples.frame_id;
UPDATE incident_frames SET path = c.path, temperature_c = c.temperature_c,
                           precipitation_mm = c.precipitation_mm
FROM _card_frames c WHERE c.frame_id = incident_frames.frame_id;
DROP TABLE _card_frames;
UPDATE run_aggregates SET has_cards = has_conditions;
UPDATE reviews SET frame_taken_at = f.taken_at, frame_daylight = f.daylight
FROM frames f WHERE f.frame_id = reviews.frame_id;
"""

# Each frame's joined observation, stored (`frame_weather` becomes a table): the ASOF join of
# every frame with the weather (1-2 s at 750k frames) ran in every reader that filtered by or
# showed the weather; now it runs when the weather or the frames change, and a weather filter is
# a plain column predicate. The join itself is the same view as before, renamed
# `frame_weather_live` (same rules: the station of `weather_station_used`, the latest
# observation at or before the frame's UTC time within `weather_tolerance_minutes`); the table
# holds its rows (one per frame with a UTC time), kept equal to it by the store's writers in
# their transactions (`store.weather.refresh_join`: observations imported or replaced, the
# join's station or tolerance, frames ingested or re-timed) and by `analyze`, which refreshes
# it before it writes a run's aggregates. Filled here from the view for the store as it is.
# `run_condition_samples` and `run_condition_sample_scores`: besides its sample, a run keeps
# each weather condition's first frames in hash order (`store.aggregates.CONDITION_SAMPLE`)
# that the sample lacks, with their scores, in tables of their own (so the pages without a
# weather filter read the sample alone, as before). Runs written before have none: a filter on
# a rare condition scans for them until the next analysis.
_STORED_WEATHER = (
    """
CREATE TABLE run_condition_samples (
    run_id            BIGINT NOT NULL,
    frame_id          BIGINT NOT NULL,
    taken_at          TIMESTAMP,
    daylight          VARCHAR,
    cluster           INTEGER,
    map_x             DOUBLE,
    map_y             DOUBLE,
    condition         VARCHAR,
    path              VARCHAR,
    temperature_c     DOUBLE,
    precipitation_mm  DOUBLE,
    PRIMARY KEY (run_id, frame_id)
);

CREATE TABLE run_condition_sample_scores (
    run_id      BIGINT NOT NULL,
    detector    VARCHAR NOT NULL,
    frame_id    BIGINT NOT NULL,
    score       DOUBLE,
    score_pct   DOUBLE,
    is_outlier  BOOLEAN,
    PRIMARY KEY (run_id, detector, frame_id)
);

DROP VIEW IF EXISTS frame_facts;
DROP VIEW IF EXISTS frame_weather;

"""
    + "CREATE OR REPLACE VIEW frame_weather_live AS\n"
    + _FRAME_WEATHER_JOIN
    + """
CREATE TABLE frame_weather (
    frame_id             BIGINT NOT NULL,   -- one row per frame with a UTC time
    station              VARCHAR,           -- NULL: no observation within the tolerance
    weather_observed_at  TIMESTAMPTZ,
    temperature_c        DOUBLE,
    precipitation_mm     DOUBLE,
    cloud_cover_pct      DOUBLE,
    wind_speed_ms        DOUBLE,
    visibility_km        DOUBLE,
    weather_code         INTEGER,
    condition            VARCHAR NOT NULL   -- 'unknown' without an observation
);
INSERT INTO frame_weather SELECT * FROM frame_weather_live ORDER BY frame_id;

"""
    + _FRAME_FACTS
    + """"""
)

# The Incidents page without reading every incident (`store.facts.incident_list`): a run's
# incidents grouped by the cells their frames fall in (period x hour x daylight x cluster x
# condition, the grain of `run_frame_cells`): incidents whose frames fall in the same set of
# cells form one group (`incident_groups`: how many, their frames, the longest), the cells of
# each group in `incident_group_cells`, so a filter on dates, hours, daylight, clusters and
# weather counts the incidents it keeps from the groups with a cell it keeps (a single-cell
# incident shares its group with every other incident in that cell). The groups are made twice:
# of cells by period (`dated`, for a filter with dates) and of the cells summed over every
# period (hour x daylight x cluster x condition, for a filter without dates: a few hundred
# cells at any archive length, so the groups stop growing with the archive). `incident_ranks` holds the incidents in the page's order
# (most frames, then highest peak, then id), stored in that order, so the page's longest
# incidents are the first rows of it that a kept group holds. `has_incident_groups` says a
# run has them; runs analysed before are answered by the scan of their incident frames.
# `run_frame_hours` and `run_detector_hours`: the cells summed over every period (hour x
# daylight x cluster x condition: a few thousand rows whatever the archive's length, where the
# cells grow with the periods, up to 400 of them), which the readers that need no period read
# when the filter has no dates (`store.facts._cells`); `has_hour_cells` says a run has them.
_INCIDENT_GROUPS = """
CREATE TABLE incident_groups (
    run_id       BIGINT NOT NULL,
    dated        BOOLEAN NOT NULL,       -- cells by period, or summed over every period
    group_id     INTEGER NOT NULL,
    n_incidents  INTEGER NOT NULL,
    n_frames     BIGINT NOT NULL,        -- the incidents' frames, summed
    longest      INTEGER NOT NULL,       -- the most frames of one of them
    PRIMARY KEY (run_id, dated, group_id)
);

CREATE TABLE incident_group_cells (
    run_id    BIGINT NOT NULL,
    dated     BOOLEAN NOT NULL,
    group_id  INTEGER NOT NULL,
    period    DATE,                      -- first day of the period (NULL: not dated)
    hour      SMALLINT,
    daylight  VARCHAR,
    cluster   INTEGER,
    condition VARCHAR
);

CREATE TABLE incident_ranks (
    run_id       BIGINT NOT NULL,
    rank         INTEGER NOT NULL,       -- 1 = most frames, then highest peak, then lowest id
    group_id     INTEGER NOT NULL,       -- its group of cells by period
    hour_group_id INTEGER NOT NULL,      -- its group of cells summed over the periods
    incident_id  INTEGER NOT NULL,
    started_at   TIMESTAMP NOT NULL,
    ended_at     TIMESTAMP NOT NULL,
    duration_s   DOUBLE NOT NULL,
    n_frames     INTEGER NOT NULL,
    n_flagged    INTEGER NOT NULL,
    cause        VARCHAR NOT NULL,
    cause_share  DOUBLE,
    peak_score   DOUBLE,
    peak_pct     DOUBLE,
    frame_id     BIGINT NOT NULL,
    PRIMARY KEY (run_id, rank)
);

ALTER TABLE run_aggregates ADD COLUMN has_incident_groups BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE run_frame_hours (
    run_id    BIGINT NOT NULL,
    hour      SMALLINT,
    daylight  VARCHAR,
    cluster   INTEGER,
    condition VARCHAR,
    n_frames  BIGINT NOT NULL,
    first_at  TIMESTAMP,
    last_at   TIMESTAMP
);

CREATE TABLE run_detector_hours (
    run_id     BIGINT NOT NULL,
    detector   VARCHAR NOT NULL,
    hour       SMALLINT,
    daylight   VARCHAR,
    cluster    INTEGER,
    condition  VARCHAR,
    n_rows     BIGINT NOT NULL,
    n_flagged  BIGINT NOT NULL,
    n_pct      BIGINT NOT NULL,
    sum_pct    DOUBLE,
    sum_score  DOUBLE,
    max_score  DOUBLE
);

ALTER TABLE run_aggregates ADD COLUMN has_hour_cells BOOLEAN NOT NULL DEFAULT FALSE;
"""

_CAUSE_EVIDENCE = """
CREATE TABLE frame_cause_evidence (
    run_id       BIGINT NOT NULL,
    frame_id     BIGINT NOT NULL,
    cause        VARCHAR NOT NULL,       -- the cause of junk of the detectors it comes from
    plain_cause  VARCHAR NOT NULL,       -- what it names (store.causes.PLAIN_CAUSES)
    evidence     DOUBLE NOT NULL         -- > 0: the largest tail evidence of those detectors
);
"""

# The sharpness of each cell of the view cut 3 x 3 (row by row from the top left; the
# `soft_cells` detector compares each with the camera's own good frames, so water on part of
# the lens shows). Frames ingested before it have NULL until `analyze` fills them in from
# their stored thumbnails (`pipeline.imagestats.backfill_thumbnail_measures`).
_SHARPNESS_CELLS = """
ALTER TABLE frames ADD COLUMN IF NOT EXISTS sharpness_cells DOUBLE[];
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial schema and reader views", _TABLES + _VIEWS),
    (2, "frames and ingest errors keyed by the file's location", _LOCATIONS),
    (3, "incidents and per-run aggregates", _AGGREGATES),
    (4, "the numeric precision of every vector and model row", _PRECISION),
    (5, "frames.local_contrast", _LOCAL_CONTRAST),
    (6, "the weather condition in the per-run aggregates", _AGGREGATE_CONDITIONS),
    (7, "gallery cards in the per-run aggregates, frame times in reviews", _AGGREGATE_CARDS),
    (8, "each frame's joined observation stored (frame_weather a table)", _STORED_WEATHER),
    (
        9,
        "incidents grouped by their cells and in the Incidents page's order; undated cells",
        _INCIDENT_GROUPS,
    ),
    (
        10,
        "each flaggable frame's evidence per plain cause, to name recombined incidents",
        _CAUSE_EVIDENCE,
    ),
    (11, "frames.sharpness_cells", _SHARPNESS_CELLS),
]

LATEST = MIGRATIONS[-1][0]


def applied_version(con: duckdb.DuckDBPyConnection) -> int:
    """The store's schema version: its newest applied migration, 0 for an empty file."""
    return _applied(con)


def _applied(con: duckdb.DuckDBPyConnection) -> int:
    """Newest applied migration, 0 for an empty file."""
    return max(_applied_numbers(con), default=0)


def _applied_numbers(con: duckdb.DuckDBPyConnection) -> set[int]:
    """Every migration the file records (none for an empty file)."""
    exists = scalar(
        con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    )
    if not exists:
        return set()
    return {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}


def missing(con: duckdb.DuckDBPyConnection) -> list[int]:
    """The migrations this code knows that the file lacks, in the order they are applied."""
    applied = _applied_numbers(con)
    return [number for number, _, _ in MIGRATIONS if number not in applied]


def _refuse_newer(version: int, path: Path) -> None:
    if version > LATEST:
        raise SchemaError(
            f"the store {path} has schema version {version}, newer than this code knows "
            f"({LATEST}): update the software (git pull, then `make demo` or `pip install -r "
            "requirements.txt`) before using this file."
        )


def check_ours(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The schema version of a file that is a store of ours (or empty); raises `SchemaError`
    for one made by another program, whose tables clash with ours. Changes nothing."""
    version = _applied(con)
    _refuse_newer(version, path)
    if version == 0:
        _refuse_foreign(con, path)
    return version


def _refuse_foreign(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A file without our migrations may hold tables of its own (they are kept) and tables an
    older version of ours half made; a table with one of our names but other columns means
    another program made the file."""
    theirs = _columns(con)
    ours = _first_schema()
    for table in sorted(set(theirs) & set(ours)):
        if theirs[table] != ours[table]:
            raise SchemaError(
                f"{path} is a DuckDB database made by another program: its table {table!r} "
                f"has columns ({', '.join(theirs[table])}), not this tool's. Nothing was "
                "changed; give --db a new file name for the store."
            )


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return tables


_FIRST_SCHEMA: dict[str, list[str]] = {}


def _first_schema() -> dict[str, list[str]]:
    """Tables and columns migration 1 makes (what a half-made store of ours can hold)."""
    if not _FIRST_SCHEMA:
        with duckdb.connect(":memory:", config=CONNECT_CONFIG) as mem:
            mem.execute(_TABLES)
            _FIRST_SCHEMA.update(_columns(mem))
    return _FIRST_SCHEMA


def check(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """For read-only opens: the schema must be known and current."""
    _session_defaults(con)
    version = check_ours(con, path)
    lacking = missing(con)
    if lacking:
        lacks = "" if version < LATEST else f" (it lacks {', '.join(map(str, lacking))})"
        raise SchemaError(
            f"the store {path} has schema version {version}{lacks}; this code needs {LATEST}. "
            f"Upgrade it with `python -m pipeline migrate --db {path}` (any pipeline command "
            "that writes, such as run, also upgrades it)."
        )
    return version


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Apply pending migrations, one transaction each. Returns the schema version.

    A file made by another program is refused before anything is written (`check_ours`).
    """
    _session_defaults(con)
    check_ours(con, path)
    lacking = set(missing(con))
    for number, name, sql in MIGRATIONS:
        if number not in lacking:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [number, name]
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return _applied(con)


def _session_defaults(con: duckdb.DuckDBPyConnection) -> None:
    # Timestamps with time zone are read and written in UTC whatever the machine's zone.
    con.execute("SET TimeZone = 'UTC'")
