"""The per-run aggregates on the demo store: every reader gives the same answer from them as
from the scan of every frame (also when the stored lists are too short and it must scan; the
gallery cards stored with the lists too), the rule that says when they may be read, incidents and the mosaic as the analysis wrote them, and
prune removing them with their run."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

import store
from store import aggregates, facts, reviews
from store.db import scalar
from store.facts import FrameFilter


def _both(monkeypatch, fn, *args):
    """`fn(*args)` answered from the aggregates, then by the scan."""
    aggregated = fn(*args)
    with monkeypatch.context() as m:
        m.setattr(aggregates, "covers", lambda con, flt: False)
        scanned = fn(*args)
    return aggregated, scanned


def _same(a, b, what: str) -> None:
    if isinstance(a, tuple):
        for x, y in zip(a, b):
            _same(x, y, what)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            _same(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(
            a.drop(columns=["thumb"], errors="ignore"),
            b.drop(columns=["thumb"], errors="ignore"),
            check_dtype=False,
            rtol=1e-9,
            obj=what,
        )
    elif pd.api.types.is_scalar(a) and pd.isna(a):  # NaN, NaT, None: nothing kept
        assert pd.isna(b), what
    else:
        assert a == pytest.approx(b, rel=1e-9) if isinstance(a, float) else a == b, what


def _conditions(con) -> list[str]:
    """The demo's conditions among its frames, most frames first (the weather filter's)."""
    return [
        r[0]
        for r in con.execute(
            "SELECT coalesce(fw.condition, 'unknown') AS c FROM frames f "
            "LEFT JOIN frame_weather fw USING (frame_id) GROUP BY c ORDER BY count(*) DESC, c"
        ).fetchall()
    ]


def _filters(con, run_id) -> list[FrameFilter]:
    opts = facts.options(con, run_id)
    first, last = opts["date_min"], opts["date_max"]
    base = FrameFilter(run_id=run_id)
    common, *rarer = _conditions(con)
    assert rarer, "the demo's frames see more than one kind of weather"
    return [
        base,
        base.replace(hour_from=6, hour_to=18),
        base.replace(hour_from=20, hour_to=4, detector="lof"),
        base.replace(daylight=("day",), detector="dark"),
        base.replace(clusters=(opts["clusters"][0],)),
        base.replace(date_from=first, date_to=first),
        base.replace(date_from=last, date_to=last, daylight=("night", "twilight")),
        # the weather filter: one condition, the rarer ones with other filters, one no frame has
        base.replace(conditions=(common,)),
        base.replace(conditions=tuple(rarer), hour_from=6, hour_to=18, detector="lof"),
        base.replace(conditions=tuple(rarer[-1:]), daylight=("day",), clusters=(0,)),
        base.replace(conditions=("snow",) if "snow" not in rarer + [common] else ("nowhere",)),
    ]


def _readers(opts: dict) -> list[tuple[str, tuple]]:
    """Reader calls to compare: small requests too, which short stored lists can answer."""
    a, b = opts["detectors"][:2]
    return [
        ("summary", ()),
        ("outliers_per_detector", ()),
        ("calendar", ()),
        ("timeline", ()),
        ("count", ()),
        ("frames_page", (0, 24, "score")),
        ("frames_page", (1, 10, "score")),
        ("frames_page", (0, 5, "score")),
        ("gallery_page", (0, 24, "score")),
        ("map_points", (20_000, False)),
        ("map_points", (30, True)),
        ("map_points", (20_000, True)),
        ("cluster_sizes", ()),
        ("cluster_profiles", ()),
        ("detector_matrix", (opts["detectors"][:3], 60, True)),
        ("detector_matrix", (opts["detectors"][:3], 10, False)),
        ("top_k_differences", (a, b, 10, 6, False)),
        ("top_k_differences", (a, b, 5, 3, False)),
        ("export_count", ("not_junk",)),
        ("export_count", ("keep",)),
        ("next_unreviewed", ()),
        ("next_unreviewed_row", ()),
        ("incidents", ()),
        ("incident_list", (1000, None)),
        ("incident_list", (3, 1)),
        ("export_frames", ("not_junk", 200)),
        ("export_frames", ("not_junk", 7)),
        ("export_frames", ("clean", 7)),
        ("export_frames", ("keep", 7)),
    ]


def _card_readers(opts: dict) -> list[tuple[str, tuple]]:
    """Reader calls that draw gallery cards from the stored lists (`aggregates.cards`)."""
    a, b = opts["detectors"][:2]
    return [
        ("frames_page", (0, 24, "score", True)),
        ("gallery_page", (1, 10, "score")),
        ("cluster_samples", (6, 0, True)),
        ("cluster_samples", (2, 3, False)),
        ("map_points", (20_000, True)),  # the sample's stored conditions
        ("top_k_differences", (a, b, 10, 6, True)),
    ]


def _with_and_without_cards(monkeypatch, fn, *args):
    """`fn(*args)` with its cards read from the stored lists, then joined from the frames."""
    carded = fn(*args)
    with monkeypatch.context() as m:
        m.setattr(aggregates, "cards", lambda con, flt: False)
        joined = fn(*args)
    return carded, joined


def _compare_every_reader(con, monkeypatch) -> int:
    run_id = facts.latest_run_id(con)
    opts = facts.options(con, run_id)
    covered = 0
    for flt in _filters(con, run_id):
        covered += aggregates.covers(con, flt)
        assert aggregates.cards(con, flt) == aggregates.covers(con, flt)
        for name, args in _readers(opts):
            got, expected = _both(monkeypatch, getattr(facts, name), con, flt, *args)
            _same(got, expected, f"{name}{args} {flt}")
        # the cards stored with the lists are the frames' (a sample may differ from the scan's
        # pick, so these compare the stored list's answer with and without its cards)
        for name, args in _card_readers(opts):
            fn = getattr(facts, name)
            got, expected = _with_and_without_cards(monkeypatch, fn, con, flt, *args)
            _same(got, expected, f"{name}{args} {flt}, cards")
    return covered


def test_every_reader_answers_the_same_from_the_aggregates(con, monkeypatch):
    assert _compare_every_reader(con, monkeypatch) == len(_filters(con, facts.latest_run_id(con)))


def test_days_with_frames_are_counted_the_same_every_way(con, monkeypatch):
    """`summary`'s `n_days` (the Overview's Days): the camera-clock days holding a frame the
    filter keeps, from day cells, from the frames' days when the cells are weeks or months,
    and by the scan; each the count of distinct days in SQL."""
    run_id = facts.latest_run_id(con)
    assert aggregates.grain(con, run_id) == "day"
    clusters = _filters(con, run_id)[4].clusters
    expected = {
        "": "TRUE",
        "hours": "hour(f.taken_at) BETWEEN 20 AND 23",
        "daylight": "f.daylight = 'day'",
        "cluster": f"c.cluster = {int(clusters[0])}",
    }
    flts = {
        "": FrameFilter(run_id=run_id),
        "hours": FrameFilter(run_id=run_id, hour_from=20, hour_to=23),
        "daylight": FrameFilter(run_id=run_id, daylight=("day",)),
        "cluster": FrameFilter(run_id=run_id, clusters=clusters),
    }
    for name, flt in flts.items():
        n = scalar(
            con,
            "SELECT count(DISTINCT f.taken_at::DATE) FROM frames f LEFT JOIN clusters c "
            f"ON c.frame_id = f.frame_id AND c.run_id = ? WHERE {expected[name]}",
            [run_id],
        )
        assert aggregates.covers(con, flt)
        by_cells, scanned = _both(monkeypatch, lambda f: facts.summary(con, f)["n_days"], flt)
        with monkeypatch.context() as m:
            m.setattr(aggregates, "grain", lambda con, run_id: "week")
            by_frames = facts.summary(con, flt)["n_days"]
        assert by_cells == by_frames == scanned == n, name
    for flt in _filters(con, run_id):
        _same(*_both(monkeypatch, lambda f: facts.summary(con, f)["n_days"], flt), str(flt))


def test_short_stored_lists_fall_back_to_the_scan(store_copy, monkeypatch):
    with store.connect(store_copy) as con:
        run_id = facts.latest_run_id(con)
        con.execute("BEGIN TRANSACTION")
        aggregates.write(con, run_id, sample_frames=20, top_frames=8, condition_sample=10)
        con.execute("COMMIT")
    with store.connect(store_copy, read_only=True) as con:
        assert scalar(con, "SELECT count(*) FROM run_samples WHERE run_id = ?", [run_id]) == 20
        # each condition's own first ten frames in hash order are there too (migration 8)
        short = scalar(
            con,
            """
            WITH s AS (SELECT condition, count(*) AS n
                       FROM (SELECT run_id, condition FROM run_samples UNION ALL
                             SELECT run_id, condition FROM run_condition_samples)
                       WHERE run_id = $run GROUP BY condition)
            , c AS (SELECT condition, sum(n_frames) AS k FROM run_frame_cells
                    WHERE run_id = $run AND cluster IS NOT NULL GROUP BY condition)
            SELECT count(*) FROM c LEFT JOIN s USING (condition)
            WHERE coalesce(s.n, 0) < least(c.k, 10)""",
            {"run": run_id},
        )
        assert short == 0
        _compare_every_reader(con, monkeypatch)
        # a map smaller than the sample is drawn from it: flagged frames of the sample first
        points, n = facts.map_points(con, FrameFilter(run_id=run_id), 10)
        sample = {
            r[0]
            for r in con.execute(
                "SELECT frame_id FROM run_samples WHERE run_id = ?", [run_id]
            ).fetchall()
        }
        assert n == scalar(con, "SELECT count(*) FROM clusters WHERE run_id = ?", [run_id])
        assert len(points) == 10 and set(points["frame_id"]) <= sample
        flags = points["is_outlier"].fillna(False).tolist()
        assert flags == sorted(flags, reverse=True)


def test_the_rule_for_reading_the_aggregates(store_copy):
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        base = FrameFilter(run_id=run_id)
        assert aggregates.covers(con, base.replace(hour_from=3, daylight=("day",)))
        assert aggregates.covers(con, base.replace(conditions=("fog",)))
        assert not aggregates.covers(con, base.replace(threshold_kind="flagged"))
        assert not aggregates.covers(con, base.replace(frame_ids=(1, 2)))
        assert not aggregates.covers(con, FrameFilter(run_id=None))
        assert aggregates.grain(con, run_id) == "day"
        monday = scalar(con, "SELECT min(taken_at)::DATE FROM frames")
        monday -= timedelta(days=monday.weekday())
    with store.connect(store_copy) as con:  # cells of weeks: only whole weeks are covered
        con.execute("UPDATE run_aggregates SET cell_grain = 'week'")
    with store.connect(store_copy, read_only=True) as con:
        week = base.replace(date_from=monday, date_to=monday + timedelta(days=6))
        assert aggregates.covers(con, week)
        assert not aggregates.covers(con, week.replace(date_to=monday + timedelta(days=5)))
    with store.connect(store_copy) as con:
        con.execute("UPDATE run_aggregates SET cell_grain = 'day'")
        aggregates.mark_stale(con)  # frame times changed (locate, a clock fix)
    with store.connect(store_copy, read_only=True) as con:
        assert not aggregates.covers(con, base)
    with store.connect(store_copy) as con:
        con.execute("UPDATE run_aggregates SET is_stale = FALSE")
        con.execute(
            "UPDATE analysis_runs SET n_frames = n_frames + 1 WHERE run_id = ?", [run_id]
        )  # what score-new does when it adds a frame to the run
    with store.connect(store_copy, read_only=True) as con:
        assert not aggregates.covers(con, base)


def test_a_weather_filter_reads_the_aggregates_while_their_conditions_hold(store_copy):
    """Observations added or replaced, or a new station or tolerance for the join, change
    frames' conditions: a weather filter scans from then on (until the next analysis), the
    other filters still read the aggregates; so does a run written before the conditions."""
    from store import weather as store_weather

    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        observed = store_weather.observations(con)
        tolerance = store_weather.tolerance_minutes(con)
    base = FrameFilter(run_id=run_id)
    rain = base.replace(conditions=("rain",), hour_from=6)

    def covered() -> tuple[bool, bool]:
        with store.connect(store_copy, read_only=True) as con:
            return aggregates.covers(con, base), aggregates.covers(con, rain)

    def rewrite() -> None:
        with store.connect(store_copy) as con:
            con.execute("BEGIN TRANSACTION")
            aggregates.write(con, run_id)
            con.execute("COMMIT")

    assert covered() == (True, True)
    with store.connect(store_copy) as con:
        assert store_weather.insert_observations(con, observed) == (0, len(observed))
        store_weather.set_join(con, tolerance_minutes=tolerance)  # the same join
    assert covered() == (True, True)
    with store.connect(store_copy) as con:
        later = observed.tail(1).assign(
            observed_at=observed["observed_at"].max() + timedelta(hours=1)
        )
        assert store_weather.insert_observations(con, later) == (1, 0)
    assert covered() == (True, False)
    rewrite()
    assert covered() == (True, True)
    with store.connect(store_copy) as con:
        store_weather.insert_observations(con, observed.head(3), replace=True)
    assert covered() == (True, False)
    rewrite()
    with store.connect(store_copy) as con:
        store_weather.set_join(con, tolerance_minutes=tolerance / 2)
    assert covered() == (True, False)
    rewrite()
    with store.connect(store_copy) as con:  # as migration 6 leaves a run written before it
        con.execute("UPDATE run_aggregates SET has_conditions = FALSE")
        con.execute("UPDATE run_frame_cells SET condition = NULL")
    assert covered() == (True, False)


def test_reviews_under_a_weather_filter_count_the_same_both_ways(store_copy, monkeypatch):
    """Reviews are joined live: with a weather filter the aggregates' answer counts the
    reviewed frames of those conditions (joined for those frames only) as the scan does."""
    with store.connect(store_copy) as con:
        ids = [
            r[0] for r in con.execute("SELECT frame_id FROM frames ORDER BY frame_id").fetchall()
        ]
        reviews.set_verdicts(con, ids[::3], "junk")
        reviews.set_verdicts(con, ids[1::7], "keep")
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        for condition in _conditions(con):
            flt = FrameFilter(run_id=run_id, conditions=(condition,))
            assert aggregates.covers(con, flt)
            for name, args in (("summary", ()), ("export_count", ("not_junk",))):
                got, expected = _both(monkeypatch, getattr(facts, name), con, flt, *args)
                _same(got, expected, f"{name} {condition}")
            assert facts.summary(con, flt)["n_junk"] > 0 or condition == "unknown"


def test_incident_strips_from_the_stored_cards_match_the_scan(con, run_id, monkeypatch):
    """Each incident's strip drawn from `incident_frames`' stored cards (migration 7) is the
    one drawn from the frames, for two detectors and strips shorter and longer than it."""
    assert aggregates.cards(con, FrameFilter(run_id=run_id))
    ids = [
        r[0]
        for r in con.execute(
            "SELECT incident_id FROM incidents WHERE run_id = ? ORDER BY n_frames DESC, "
            "incident_id",
            [run_id],
        ).fetchall()
    ]
    assert ids
    for incident in ids[:3] + ids[-2:]:
        for n, detector in ((12, "consensus"), (3, "lof"), (1000, "iforest")):
            got, expected = _both(
                monkeypatch, facts.incident_strip, con, run_id, incident, n, detector
            )
            _same(got, expected, f"incident_strip {incident} {n} {detector}")
            assert got["rows"]["thumb"].notna().all()


def test_cards_are_read_while_their_weather_holds(store_copy, monkeypatch):
    """Changed observations make the stored cards' weather old: the pages draw cards from the
    frames again (same answers as the scan), until the next analysis writes them anew (with the
    new weather); the cards' paths follow a moved frame."""
    from store import frames as store_frames
    from store import weather as store_weather

    with store.connect(store_copy) as con:
        run_id = facts.latest_run_id(con)
        observed = store_weather.observations(con)
        store_weather.insert_observations(
            con, observed.assign(temperature_c=observed["temperature_c"] + 3.0), replace=True
        )
    base = FrameFilter(run_id=run_id)
    with store.connect(store_copy, read_only=True) as con:
        assert aggregates.covers(con, base) and not aggregates.cards(con, base)
        got, expected = _both(monkeypatch, facts.gallery_page, con, base, 0, 24, "score")
        _same(got, expected, "gallery_page, weather changed")
        top = facts.frames_page(con, base, 0, 1)[0].iloc[0]
    with store.connect(store_copy) as con:
        con.execute("BEGIN TRANSACTION")
        aggregates.write(con, run_id)
        con.execute("COMMIT")
        moved = con.execute(
            "SELECT frame_id, root, 'moved/' || path AS path, location FROM frames "
            "WHERE frame_id = ?",
            [int(top["frame_id"])],
        ).df()
        store_frames.relocate(con, moved)
    with store.connect(store_copy, read_only=True) as con:
        assert aggregates.cards(con, base)
        got, expected = _both(monkeypatch, facts.gallery_page, con, base, 0, 24, "score")
        _same(got, expected, "gallery_page, rewritten")
        assert got["rows"]["path"].iloc[0] == "moved/" + top["path"]
        _same(got["rows"]["temperature_c"].iloc[0], top["temperature_c"], "the new weather")


def test_reviews_follow_their_frames_new_times(store_copy, monkeypatch):
    """Frames re-timed after they were reviewed (a clock fix): their reviews' stored time and
    daylight follow, so after the next analysis the review counts of an hour or daylight
    filter, read without joining the frames, are the scan's."""
    from store import frames as store_frames

    with store.connect(store_copy) as con:
        run_id = facts.latest_run_id(con)
        ids = [r[0] for r in con.execute("SELECT frame_id FROM frames ORDER BY 1").fetchall()]
        reviews.set_verdicts(con, ids[::5], "junk")
        reviews.set_verdicts(con, ids[2::9], "keep")
        times = con.execute(
            f"SELECT frame_id, {', '.join(store_frames.TIME_COLUMNS)} FROM frames "
            "WHERE frame_id % 2 = 0"
        ).df()
        times["taken_at"] += pd.Timedelta(hours=7)
        times["daylight"] = (
            times["daylight"].map({"day": "night", "night": "day"}).fillna(times["daylight"])
        )
        store_frames.update_times(con, times)
        assert not con.execute(
            "SELECT count(*) FROM reviews r JOIN frames f USING (frame_id) "
            "WHERE r.frame_taken_at IS DISTINCT FROM f.taken_at "
            "OR r.frame_daylight IS DISTINCT FROM f.daylight"
        ).fetchone()[0]
        con.execute("BEGIN TRANSACTION")
        con.execute("UPDATE run_aggregates SET is_stale = FALSE")  # as the next analysis
        aggregates.write(con, run_id)
        con.execute("COMMIT")
    with store.connect(store_copy, read_only=True) as con:
        base = FrameFilter(run_id=run_id)
        for flt in (
            base.replace(hour_from=6, hour_to=12),
            base.replace(hour_from=20, hour_to=5),
            base.replace(daylight=("day",)),
        ):
            assert aggregates.covers(con, flt)
            for name, args in (("summary", ()), ("export_count", ("keep",))):
                got, expected = _both(monkeypatch, getattr(facts, name), con, flt, *args)
                _same(got, expected, f"{name} {flt}")


def test_incidents_and_mosaic_as_the_analysis_wrote_them(con, run_id):
    found = facts.incidents(con, FrameFilter(run_id=run_id))
    assert len(found) == scalar(con, "SELECT count(*) FROM incidents WHERE run_id = ?", [run_id])
    assert len(found) > 0 and found["started_at"].is_monotonic_increasing
    members = scalar(con, "SELECT count(*) FROM incident_frames WHERE run_id = ?", [run_id])
    assert int(found["n_frames"].sum()) == members
    night = scalar(
        con,
        "SELECT count(*) FROM incident_frames WHERE run_id = ? AND daylight = 'night'",
        [run_id],
    )
    assert night == 0
    one = int(found["incident_id"].iloc[0])
    strip = facts.incident_strip(con, run_id, one, n=2)
    assert strip["ids"] == facts.incident_frame_ids(con, run_id, one)
    assert len(strip["rows"]) == min(2, len(strip["ids"]))
    assert set(strip["flagged"]) <= set(strip["ids"])
    picture = facts.mosaic(con, run_id)
    assert picture["png"][:8] == b"\x89PNG\r\n\x1a\n" and picture["cell_width"] == 32
    n_days = scalar(con, "SELECT count(DISTINCT taken_at::DATE) FROM frames")
    assert len(picture["days"]) == n_days
    assert all(0 <= c < n_days * 24 for c in picture["outlined"])


def test_the_incident_list_reads_the_incident_groups(store_copy, monkeypatch):
    """Migration 9: the incidents grouped by the cells their frames fall in count what the
    filter keeps, and the ranked incidents give the longest ones; the same answers as the scan
    of the incident frames, for small pages too (the first ranks may hold too few of the
    kept incidents and the list reads on), and for a run analysed before (no groups)."""
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        assert aggregates.incident_groups(con, run_id)
        n = scalar(con, "SELECT count(*) FROM incidents WHERE run_id = ?", [run_id])
        assert n >= 5, "the demo has enough incidents for pages of a few"
        members = scalar(con, "SELECT count(*) FROM incident_frames WHERE run_id = ?", [run_id])
        longest = scalar(con, "SELECT max(n_frames) FROM incidents")
        for dated in (True, False):  # cells by period, and summed over the periods
            groups = con.execute(
                "SELECT sum(n_incidents), sum(n_frames), max(longest), count(*) "
                "FROM incident_groups WHERE run_id = ? AND dated = ?",
                [run_id, dated],
            ).fetchone()
            assert groups[:3] == (n, members, longest) and 0 < groups[3] <= n
        ranked = con.execute(
            "SELECT incident_id FROM incident_ranks WHERE run_id = ? ORDER BY rank", [run_id]
        ).fetchall()
        by_length = con.execute(
            "SELECT incident_id FROM incidents WHERE run_id = ? "
            "ORDER BY n_frames DESC, peak_score DESC, incident_id",
            [run_id],
        ).fetchall()
        assert ranked == by_length
        opts = facts.options(con, run_id)
        common, *rarer = _conditions(con)
        base = FrameFilter(run_id=run_id)
        # the hour of the last-ranked incident's first frame: a page of one reads past the
        # first four ranks for it
        last = con.execute(
            "SELECT started_at FROM incident_ranks WHERE run_id = ? ORDER BY rank DESC LIMIT 1",
            [run_id],
        ).fetchone()[0]
        alone = base.replace(
            date_from=last.date(), date_to=last.date(), hour_from=last.hour, hour_to=last.hour
        )
        filters = [
            alone,
            *_filters(con, run_id),
            base.replace(hour_from=17, hour_to=18),  # few incidents, not the longest ones
            base.replace(clusters=(opts["clusters"][-1],), conditions=tuple(rarer[:1])),
            base.replace(daylight=("twilight",)),
        ]
        # reviews of some incidents' frames: marked incidents and verdict counts
        some = con.execute(
            "SELECT incident_id FROM incident_ranks WHERE run_id = ? ORDER BY rank LIMIT 4",
            [run_id],
        ).fetchall()
    with store.connect(store_copy) as con:
        for (incident,) in some[:2]:
            reviews.set_verdicts(con, facts.incident_frame_ids(con, run_id, incident), "junk")
        reviews.set_verdicts(con, facts.incident_frame_ids(con, run_id, some[2][0])[:1], "keep")
    with store.connect(store_copy, read_only=True) as con:
        marked = 0
        for flt in filters:
            assert aggregates.covers(con, flt)
            for limit, include in ((1000, None), (1, None), (3, 1), (2, n), (5, None)):
                got, expected = _both(monkeypatch, facts.incident_list, con, flt, limit, include)
                _same(got, expected, f"incident_list({limit}, {include}) {flt}")
                marked += got["n_marked"]
        assert marked > 0
        # the last-ranked incident is listed alone, read past the first ranks
        far = facts.incident_list(con, alone, 1, None)
        assert len(far["rows"]) == 1 and far["n"] >= 1
        assert int(far["rows"]["incident_id"].iloc[0]) not in [r[0] for r in by_length[:4]]
        grouped = facts.incident_list(con, base, 3, None)
    with store.connect(store_copy) as con:  # a run analysed before migration 9
        con.execute("UPDATE run_aggregates SET has_incident_groups = FALSE")
    with store.connect(store_copy, read_only=True) as con:
        assert aggregates.covers(con, base) and not aggregates.incident_groups(con, run_id)
        _same(facts.incident_list(con, base, 3, None), grouped, "a run without groups")


def test_undated_filters_read_the_cells_summed_over_the_periods(con, monkeypatch):
    """Migration 9: a covered filter without dates reads the cells summed over every period
    (as many rows at any archive length) in the readers that read no period; the same
    answers as from the cells by period."""
    run_id = facts.latest_run_id(con)
    assert aggregates.hour_cells(con, run_id)
    hours = scalar(con, "SELECT count(*) FROM run_frame_hours WHERE run_id = ?", [run_id])
    cells = scalar(con, "SELECT count(*) FROM run_frame_cells WHERE run_id = ?", [run_id])
    assert 0 < hours < cells
    opts = facts.options(con, run_id)
    readers = [
        ("summary", ()),
        ("outliers_per_detector", ()),
        ("count", ()),
        ("cluster_sizes", ()),
        ("cluster_samples", (6, 0, True)),
        ("gallery_page", (0, 24, "score")),
        ("detector_matrix", (opts["detectors"][:3], 60, True)),
    ]
    undated = [f for f in _filters(con, run_id) if f.date_from is None and f.date_to is None]
    assert len(undated) >= 5
    for flt in undated:
        assert aggregates.covers(con, flt)
        for name, args in readers:
            fn = getattr(facts, name)
            summed = fn(con, flt, *args)
            with monkeypatch.context() as m:
                m.setattr(aggregates, "hour_cells", lambda con, run_id: False)
                by_period = fn(con, flt, *args)
            _same(summed, by_period, f"{name}{args} {flt}")


def test_prune_removes_a_runs_aggregates_with_it(store_copy):
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "analyze", "--db", str(store_copy), "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "prune", "--db", str(store_copy), "--keep", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with store.connect(store_copy, read_only=True) as con:
        latest = facts.latest_run_id(con)
        for table in aggregates.TABLES:
            runs = {r[0] for r in con.execute(f"SELECT DISTINCT run_id FROM {table}").fetchall()}
            assert runs <= {latest}, table
        assert scalar(con, "SELECT count(*) FROM run_aggregates") == 1


def test_the_teaching_review_order_takes_the_top_and_a_random_frame_in_turn(
    store_copy, monkeypatch
):
    """The review order to teach `learned`: after an even number of verdicts the highest-ranked
    unreviewed frame, after an odd number the first unreviewed scored frame in hash order (a
    fixed random draw, which the order at random always offers); the same from the stored
    lists as by the scan, under every filter."""
    with store.connect(store_copy, read_only=True) as con:
        run_id = facts.latest_run_id(con)
        flts = _filters(con, run_id)
    for n_reviews in (0, 1, 2, 3):
        with store.connect(store_copy, read_only=True) as con:
            assert facts.review_turn(con, "teach") == ("random" if n_reviews % 2 else "top")
            assert facts.review_turn(con, "score") == "top"
            assert facts.review_turn(con, "random") == "random"
            for flt in flts:
                got, scanned = _both(monkeypatch, facts.next_unreviewed, con, flt, (), "teach")
                assert got == scanned, flt
                drawn, drawn_scanned = _both(
                    monkeypatch, facts.next_unreviewed, con, flt, (), "random"
                )
                assert drawn == drawn_scanned, flt
                sql, params = facts._filtered(flt, need=("score", "review"))
                first = con.execute(
                    sql + "SELECT frame_id FROM sel WHERE verdict IS NULL AND score IS NOT NULL "
                    "ORDER BY hash(frame_id), frame_id LIMIT 1",
                    params,
                ).fetchall()
                assert drawn == (first[0][0] if first else None), flt  # at random alone
                if n_reviews % 2:  # teach's random turn
                    assert got == drawn, flt
                else:
                    assert got == facts.next_unreviewed(con, flt), flt
            base = FrameFilter(run_id=run_id)
            offered = facts.next_unreviewed(con, base, (), "teach")
            # a skipped frame is passed over in either turn
            assert facts.next_unreviewed(con, base, (offered,), "teach") not in (offered, None)
        with store.connect(store_copy) as con:  # the user gives the offered frame a verdict
            reviews.set_verdicts(con, [offered], "keep" if n_reviews % 2 else "junk")
    with store.connect(store_copy, read_only=True) as con:
        with pytest.raises(ValueError, match="unknown review order"):
            facts.review_turn(con, "newest")
