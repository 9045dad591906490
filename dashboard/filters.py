"""The shared filters: parse and validate them from the URL, serialise them back, widget keys.

The URL is untrusted input. `parse()` accepts only well-formed values that the store knows
(dates, hours 0-23, known daylight values, weather conditions, clusters, runs and detectors)
and returns a notice for everything it ignored; nothing from the URL reaches SQL except as a
validated, typed value bound as a parameter, and nothing is ever used as a file path.

URL keys: from, to (YYYY-MM-DD, camera clock), hours (H-H), daylight, weather, cluster
(comma-separated), run (id), det (detector key), thr (all | flagged | pctNN | topN), causes
(the junk causes the consensus counts, comma-separated; absent = the run's own).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Mapping

from dashboard.pages import PAGE_KEYS
from store.causes import choose
from store.facts import THRESHOLD_KINDS, FrameFilter

MAX_VALUE_LEN = 200
MAX_LIST_ITEMS = 50
FILTER_KEYS = (
    "run",
    "from",
    "to",
    "hours",
    "daylight",
    "weather",
    "cluster",
    "det",
    "thr",
    "causes",
)
# Keys Streamlit itself uses in URLs. The keys pages own (`dashboard.pages.PAGE_KEYS`) are
# validated where they are read, with `parse_int` / `parse_choice`; `parse` leaves them alone.
STREAMLIT_KEYS = ("embed", "embed_options")

THRESHOLD_LABELS = {
    "all": "all frames",
    "flagged": "flagged by the detector",
    "pct": "score percentile at least",
    "topk": "top-k by score",
}

# Widget keys in st.session_state (one per filter).
W_RUN, W_DATES, W_HOURS = "f_run", "f_dates", "f_hours"
W_DAYLIGHT, W_WEATHER, W_CLUSTER = "f_daylight", "f_weather", "f_cluster"
W_DET, W_THR_KIND, W_THR_PCT, W_THR_K = "f_det", "f_thr_kind", "f_thr_pct", "f_thr_k"
W_CAUSES = "f_causes"

DEFAULT_PCT = 95.0
DEFAULT_TOPK = 100

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOURS = re.compile(r"^(\d{1,2})-(\d{1,2})$")
_INT = re.compile(r"^-?\d{1,9}$")
_KEY = re.compile(r"^[a-z0-9_\-]{1,40}(:[a-z0-9_\-]{1,40})?$")  # cause scores: cause:quality
_THR = re.compile(r"^(all|flagged|pct(\d{1,3}(?:\.\d{1,2})?)|top(\d{1,7}))$")


def _shorten(value: str, n: int = 40) -> str:
    text = value if len(value) <= n else value[:n] + "..."
    return repr(text)


def _as_str(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else ""
    return str(value)


def _items(key: str, raw: str, notices: list[str]) -> list[str]:
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if len(parts) > MAX_LIST_ITEMS:
        notices.append(
            f"URL parameter '{key}' has too many values; kept the first {MAX_LIST_ITEMS}."
        )
        parts = parts[:MAX_LIST_ITEMS]
    return parts


def parse(params: Mapping[str, Any], opts: Mapping[str, Any]) -> tuple[FrameFilter, list[str]]:
    """A FrameFilter from URL parameters, validated against the store's `opts`
    (`store.facts.options`), and one notice per ignored value."""
    notices: list[str] = []
    values: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for key, value in params.items():
        text = _as_str(value)
        if key in STREAMLIT_KEYS or key in PAGE_KEYS:
            continue
        if key not in FILTER_KEYS:
            notices.append(f"Ignored unknown URL parameter {_shorten(str(key), 30)}.")
            continue
        if len(text) > MAX_VALUE_LEN:
            notices.append(
                f"Ignored URL parameter '{key}': value too long ({len(text)} characters)."
            )
            continue
        raw[key] = text

    runs = list(opts.get("runs") or [])
    if "run" in raw:
        text = raw["run"]
        if _INT.match(text) and int(text) in runs:
            values["run_id"] = int(text)
        else:
            notices.append(
                f"Ignored URL parameter 'run': {_shorten(text)} is not a complete "
                "analysis run in this store."
            )
    for key, attr in (("from", "date_from"), ("to", "date_to")):
        if key in raw:
            text = raw[key]
            parsed = None
            if _DATE.match(text):
                try:
                    parsed = date.fromisoformat(text)
                except ValueError:
                    parsed = None
            if parsed is None:
                notices.append(
                    f"Ignored URL parameter '{key}': {_shorten(text)} is not a date (YYYY-MM-DD)."
                )
            else:
                values[attr] = parsed
    if "date_from" in values and "date_to" in values and values["date_from"] > values["date_to"]:
        notices.append("Ignored URL parameter 'to': it is before 'from'.")
        del values["date_to"]
    if "hours" in raw:
        match = _HOURS.match(raw["hours"])
        lo, hi = (int(match[1]), int(match[2])) if match else (-1, -1)
        if match and 0 <= lo <= hi <= 23:
            values["hour_from"], values["hour_to"] = lo, hi
        else:
            notices.append(
                f"Ignored URL parameter 'hours': {_shorten(raw['hours'])} is not an "
                "hour range like 6-18 (0-23, start <= end)."
            )
    for key, attr, known in (
        ("daylight", "daylight", opts.get("daylight") or []),
        ("weather", "conditions", opts.get("conditions") or []),
    ):
        if key in raw:
            kept = []
            for item in _items(key, raw[key], notices):
                if item in known:
                    if item not in kept:
                        kept.append(item)
                else:
                    notices.append(f"Ignored unknown {key} value {_shorten(item)} in the URL.")
            if kept:
                values[attr] = tuple(kept)
    if "cluster" in raw:
        known = set(opts.get("clusters") or [])
        kept = []
        for item in _items("cluster", raw["cluster"], notices):
            if _INT.match(item) and int(item) in known:
                if int(item) not in kept:
                    kept.append(int(item))
            else:
                notices.append(f"Ignored unknown cluster {_shorten(item)} in the URL.")
        if kept:
            values["clusters"] = tuple(kept)
    if "det" in raw:
        text = raw["det"]
        if _KEY.match(text) and text in (opts.get("detectors") or []):
            values["detector"] = text
        else:
            notices.append(
                f"Ignored URL parameter 'det': {_shorten(text)} is not a detector "
                "scored in this run."
            )
    if "thr" in raw:
        match = _THR.match(raw["thr"])
        if not match:
            notices.append(
                f"Ignored URL parameter 'thr': {_shorten(raw['thr'])} is not one of "
                "all, flagged, pctNN (0-100), topN."
            )
        elif match[2] is not None:
            pct = float(match[2])
            if 0 <= pct <= 100:
                values["threshold_kind"], values["threshold"] = "pct", pct
            else:
                notices.append("Ignored URL parameter 'thr': percentile must be 0-100.")
        elif match[3] is not None:
            k = int(match[3])
            if k >= 1:
                values["threshold_kind"], values["threshold"] = "topk", float(k)
            else:
                notices.append("Ignored URL parameter 'thr': top-k needs k >= 1.")
        else:
            values["threshold_kind"] = match[1]
    if "causes" in raw:
        known = list(opts.get("causes") or [])
        items = _items("causes", raw["causes"], notices)
        for item in items:
            if item not in known:
                notices.append(f"Ignored unknown junk cause {_shorten(item)} in the URL.")
        values["junk_causes"] = choose(items, known, list(opts.get("junk_causes") or []))
    detectors = list(opts.get("detectors") or [])
    if "detector" not in values and detectors:
        values["detector"] = detectors[0]
    if "run_id" not in values:
        values["run_id"] = runs[0] if runs else None
    return FrameFilter(**values), notices


def serialise(flt: FrameFilter, opts: Mapping[str, Any]) -> dict[str, str]:
    """URL parameters for a filter; values equal to the defaults are left out."""
    out: dict[str, str] = {}
    runs = list(opts.get("runs") or [])
    if flt.run_id is not None and (not runs or flt.run_id != runs[0]):
        out["run"] = str(flt.run_id)
    if flt.date_from is not None:
        out["from"] = flt.date_from.isoformat()
    if flt.date_to is not None:
        out["to"] = flt.date_to.isoformat()
    if (flt.hour_from, flt.hour_to) != (0, 23):
        out["hours"] = f"{flt.hour_from}-{flt.hour_to}"
    if flt.daylight:
        out["daylight"] = ",".join(flt.daylight)
    if flt.conditions:
        out["weather"] = ",".join(flt.conditions)
    if flt.clusters:
        out["cluster"] = ",".join(str(c) for c in flt.clusters)
    detectors = list(opts.get("detectors") or [])
    if flt.detector and (not detectors or flt.detector != detectors[0]):
        out["det"] = flt.detector
    if flt.threshold_kind == "flagged":
        out["thr"] = "flagged"
    elif flt.threshold_kind == "pct":
        out["thr"] = f"pct{flt.threshold:g}"
    elif flt.threshold_kind == "topk":
        out["thr"] = f"top{int(flt.threshold)}"
    if flt.junk_causes:
        out["causes"] = ",".join(flt.junk_causes)
    return out


def parse_int(
    params: Mapping[str, Any], key: str, lo: int, hi: int, notices: list[str]
) -> int | None:
    """A page's integer URL parameter within [lo, hi], or None (with a notice if malformed)."""
    if key not in params:
        return None
    text = _as_str(params[key])
    if len(text) <= 12 and _INT.match(text) and lo <= int(text) <= hi:
        return int(text)
    notices.append(
        f"Ignored URL parameter '{key}': {_shorten(text)} is not a number in {lo}..{hi}."
    )
    return None


def parse_choice(
    params: Mapping[str, Any], key: str, choices: list[str], notices: list[str], many: bool = False
) -> str | list[str] | None:
    """A page's URL parameter that must be one of `choices` (or a comma list of them)."""
    if key not in params:
        return None
    text = _as_str(params[key])
    if len(text) > MAX_VALUE_LEN:
        notices.append(f"Ignored URL parameter '{key}': value too long.")
        return None
    items = _items(key, text, notices) if many else [text]
    good = [i for i in items if i in choices]
    for bad in (i for i in items if i not in choices):
        notices.append(f"Ignored URL value {_shorten(bad)} for '{key}'.")
    if not good:
        return None
    return list(dict.fromkeys(good)) if many else good[0]


# --- widgets <-> filter -----------------------------------------------------------------------


def to_widgets(flt: FrameFilter, opts: Mapping[str, Any]) -> dict[str, Any]:
    """Session-state values for the sidebar widgets that show `flt`."""
    lo, hi = opts.get("date_min"), opts.get("date_max")
    start = flt.date_from or lo
    end = flt.date_to or hi
    state: dict[str, Any] = {
        W_RUN: flt.run_id,
        W_HOURS: (flt.hour_from, flt.hour_to),
        W_DAYLIGHT: list(flt.daylight),
        W_WEATHER: list(flt.conditions),
        W_CLUSTER: list(flt.clusters),
        W_DET: flt.detector,
        W_THR_KIND: flt.threshold_kind,
        W_THR_PCT: float(flt.threshold) if flt.threshold_kind == "pct" else DEFAULT_PCT,
        W_THR_K: int(flt.threshold) if flt.threshold_kind == "topk" else DEFAULT_TOPK,
        W_CAUSES: list(flt.junk_causes or opts.get("junk_causes") or []),
    }
    if start is not None and end is not None:
        state[W_DATES] = (start, end)
    return state


def from_widgets(state: Mapping[str, Any], opts: Mapping[str, Any]) -> FrameFilter:
    """The filter the sidebar widgets show (values outside `opts` are dropped)."""
    values: dict[str, Any] = {}
    runs = list(opts.get("runs") or [])
    run = state.get(W_RUN)
    values["run_id"] = run if run in runs else (runs[0] if runs else None)
    dates = state.get(W_DATES)
    lo, hi = opts.get("date_min"), opts.get("date_max")
    if isinstance(dates, (list, tuple)) and dates:
        start = dates[0]
        end = dates[1] if len(dates) > 1 else dates[0]
        if (start, end) != (lo, hi):  # a narrower range: both ends go in the URL
            values["date_from"], values["date_to"] = start, end
    hours = state.get(W_HOURS) or (0, 23)
    values["hour_from"], values["hour_to"] = int(hours[0]), int(hours[1])
    values["daylight"] = tuple(
        d for d in state.get(W_DAYLIGHT) or [] if d in (opts.get("daylight") or [])
    )
    values["conditions"] = tuple(
        c for c in state.get(W_WEATHER) or [] if c in (opts.get("conditions") or [])
    )
    values["clusters"] = tuple(
        int(c) for c in state.get(W_CLUSTER) or [] if c in (opts.get("clusters") or [])
    )
    detectors = list(opts.get("detectors") or [])
    det = state.get(W_DET)
    values["detector"] = det if det in detectors else (detectors[0] if detectors else "consensus")
    kind = state.get(W_THR_KIND) or "all"
    values["threshold_kind"] = kind if kind in THRESHOLD_KINDS else "all"
    if values["threshold_kind"] == "pct":
        values["threshold"] = float(state.get(W_THR_PCT, DEFAULT_PCT))
    elif values["threshold_kind"] == "topk":
        values["threshold"] = float(state.get(W_THR_K, DEFAULT_TOPK))
    values["junk_causes"] = choose(
        state.get(W_CAUSES) or [], opts.get("causes") or [], opts.get("junk_causes") or []
    )
    return FrameFilter(**values)


def plural(n: int, word: str, words: str | None = None) -> str:
    """A count and its noun, for every count the dashboard writes: "1 frame", "2 frames",
    "1,234 frames" ("1 anomaly", "3 anomalies" with `words`). Here, not in `ui`, because
    `describe` needs it and this module has no Streamlit."""
    return f"{int(n):,} {word if int(n) == 1 else (words or word + 's')}"


def describe(flt: FrameFilter) -> str:
    """One line saying what the filter keeps, for captions and export file headers."""
    parts = []
    if flt.date_from or flt.date_to:
        parts.append(f"dates {flt.date_from or '...'} to {flt.date_to or '...'}")
    if (flt.hour_from, flt.hour_to) != (0, 23):
        parts.append(f"hours {flt.hour_from:02d}:00-{flt.hour_to:02d}:59")
    if flt.daylight:
        parts.append("daylight " + "/".join(flt.daylight))
    if flt.conditions:
        parts.append("weather " + "/".join(flt.conditions))
    if flt.clusters:
        parts.append("clusters " + ",".join(str(c) for c in flt.clusters))
    if flt.threshold_kind == "flagged":
        parts.append(f"flagged by {flt.detector}")
    elif flt.threshold_kind == "pct":
        parts.append(f"{flt.detector} percentile >= {flt.threshold:g}")
    elif flt.threshold_kind == "topk":
        parts.append(f"top {int(flt.threshold)} by {flt.detector}")
    if flt.frame_ids:
        parts.append(plural(len(flt.frame_ids), "selected frame"))
    text = "; ".join(parts) if parts else "all frames"
    if flt.junk_causes:  # not a restriction: which consensus the flags and ranks are
        text += "; the consensus of junk causes " + "/".join(flt.junk_causes)
    return text
