"""Overview: counts for the filtered frames, the archive mosaic (a day per row, an hour per cell,
each the median of its thumbnails; cells mostly in incidents outlined), outliers per detector,
day x hour heatmap, timeline. Clicking a heatmap cell opens the gallery on that hour of that
day (or week or month); choosing a day below it, on that day."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboard import charts, data, filters, metrics, pages, ui
from store.aggregates import period_end

# The bar chart's split (flags the consensus shares) is counted on at most this many filtered
# frames, a fixed pseudo-random sample above it: on the 750k-frame benchmark 0.1-0.2 s for
# filters the run's stored sample answers (10,000 left an hours filter scanning: 1.2 s).
AGREEMENT_MAX_FRAMES = 5_000

flt, opts = ui.current()
st.title("Overview")
st.caption(f"Showing {filters.describe(flt)}.")

s, per_detector, cal, line, picture, *more = data.get_many(
    ("summary", flt),
    ("outliers_per_detector", flt),
    ("calendar", flt),
    ("timeline", flt),
    ("mosaic", flt.run_id, flt.junk_causes),
    # each frame's flags, for the bar chart's agreement with the consensus
    *(
        [("detector_matrix", flt, list(opts["detectors"]), AGREEMENT_MAX_FRAMES)]
        if opts["detectors"]
        else []
    ),
)
if s["n_total"] == 0:
    st.info(
        "The store has no frames yet. Add some with `python -m pipeline ingest FOLDER "
        "--db FILE`, or try `python -m pipeline demo`."
    )
    st.stop()

c1, c2, c3, c4, c5 = st.columns(5)
c1.metric("Frames", f"{int(s['n_frames']):,}", help=f"of {s['n_total']:,} in the store")
if pd.isna(s["first"]):
    c2.metric("Days", 0)
else:
    first, last = pd.Timestamp(s["first"]), pd.Timestamp(s["last"])
    span = (last.normalize() - first.normalize()).days + 1
    c2.metric(
        "Days",
        f"{int(s['n_days']):,}",
        help=f"Days (camera clock) with at least one frame the filters keep, of the {span:,} "
        f"from {first:%Y-%m-%d} to {last:%Y-%m-%d}.",
    )
    st.caption(f"From {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} (camera clock).")
c3.metric(
    "Night",
    "–" if pd.isna(s["night_share"]) else f"{s['night_share'] * 100:.0f} %",
    help=ui.DAYLIGHT_TOLD_BY.get(s["daylight_source"], (None, None))[1],
)
c4.metric("Clusters", int(s["n_clusters"]))
c5.metric(f"Flagged ({flt.detector})", f"{int(s['n_flagged']):,}")
if s["n_errors"]:
    n_err = int(s["n_errors"])
    st.caption(f"{n_err} file{'s' if n_err != 1 else ''} could not be read: see Runs & errors.")
if s["n_junk"] or s["n_keep"]:
    st.caption(f"Reviewed: {int(s['n_junk'])} junk, {int(s['n_keep'])} keep.")

if picture is not None:
    days = (flt.date_from or opts["date_min"], flt.date_to or opts["date_max"])
    st.plotly_chart(
        charts.mosaic(
            picture["png"],
            picture["days"],
            picture["cell_height"],
            picture["outlined"],
            days,
            (flt.hour_from, flt.hour_to),
        ),
        key="overview_mosaic",
    )
    st.caption(
        "Each row is a day (camera clock), each cell an hour: the median of that hour's "
        "thumbnails, made when the run was analysed. Outlined: hours at least half of "
        "whose frames are in incidents (see Incidents"
        + ("; those of the consensus of the junk causes chosen" if flt.junk_causes else "")
        + "). The dates and hours of the "
        "filters apply; the other filters do not."
    )
elif opts["detectors"]:
    st.caption(
        "No archive mosaic for this run (it was analysed before mosaics were made): "
        "run `python -m pipeline analyze` again."
    )

if opts["detectors"]:
    wide = more[0]
    agreement = metrics.consensus_agreement(wide, list(per_detector["detector"]))
    sampled = len(wide) >= AGREEMENT_MAX_FRAMES
    st.plotly_chart(charts.outliers_bar(per_detector, agreement, sampled), key="overview_bar")
    if not agreement.empty:
        st.caption(
            "Each detector flags its own top share of the run's frames (over all frames the "
            "bars are the same height): what tells them apart is agreement. Solid: frames the "
            "consensus flags too; hatched: frames only that detector flags (its own view of "
            "junk, or its false alarms)."
            + (
                f" The split is counted on a fixed pseudo-random sample of "
                f"{AGREEMENT_MAX_FRAMES:,} of the filtered frames."
                if sampled
                else ""
            )
        )

value = st.segmented_control(
    "Heatmap shows",
    ["n_frames", "outlier_rate"],
    default="n_frames",
    key="overview_heat",
    format_func={"n_frames": "frames", "outlier_rate": "outlier rate"}.get,
)
event = st.plotly_chart(
    charts.calendar_heatmap(cal, value or "n_frames"),
    key="overview_cal",
    on_select="rerun",
    selection_mode=("points",),
)
unit = str(cal["period"].iloc[0]) if len(cal) else "day"
starts = {charts.period_label(d, unit): pd.Timestamp(d).date() for d in cal["day"]}
# A click selects the invisible marker on the cell (`charts.calendar_heatmap`): its `y` is
# the period's label, its `x` the hour. An empty cell opens nothing.
filled = {(pd.Timestamp(d).date(), int(h)) for d, h in zip(cal["day"], cal["hour"])}
points = (event.get("selection") or {}).get("points") if event else None
if points:
    p = points[0]
    try:
        first = starts[p["y"]]
        hour = int(p["x"])
    except (KeyError, ValueError, TypeError):
        first = None
    if first is not None and (first, hour) in filled:
        ui.request_filter(
            **{filters.W_DATES: (first, period_end(first, unit)), filters.W_HOURS: (hour, hour)}
        )
        st.switch_page(pages.view("Gallery"))

if not cal.empty:
    firsts = sorted(set(starts.values()))
    col_a, col_b = st.columns([3, 1])
    chosen: date | None = col_a.selectbox(
        f"Open a {unit} in the gallery",
        firsts,
        index=None,
        placeholder=f"choose a {unit}",
        key="overview_day",
        format_func=lambda d: charts.period_label(d, unit),
    )
    if col_b.button("Open gallery", disabled=chosen is None, key="overview_open"):
        ui.request_filter(**{filters.W_DATES: (chosen, period_end(chosen, unit))})
        st.switch_page(pages.view("Gallery"))

st.plotly_chart(charts.timeline(line), key="overview_timeline")
