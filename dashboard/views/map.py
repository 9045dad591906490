"""Map: the run's 2-D embedding as a WebGL scatter coloured by cluster, score, daylight or
weather. A box or lasso selection becomes the selection the gallery and review pages use.
Above the point budget the page shows a stated, deterministic sample."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, filters, pages, ui

MAX_POINTS = 20_000
COLOR_LABELS = {
    "cluster": "cluster",
    "score": "score percentile",
    "daylight": "daylight",
    "condition": "weather",
}

flt, opts = ui.current()
st.title("Map")
found: list[str] = []
url_color = filters.parse_choice(st.query_params.to_dict(), "color", list(charts.COLOR_BY), found)
ui.notices(found)
if "map_color" not in st.session_state:
    st.session_state["map_color"] = url_color or "cluster"
color = (
    st.segmented_control(
        "Colour by", list(charts.COLOR_BY), key="map_color", format_func=COLOR_LABELS.get
    )
    or "cluster"
)
st.query_params["color"] = color

points, n = data.get("map_points", flt, MAX_POINTS, color == "condition")
if n == 0:
    st.info(
        "No map coordinates for these frames: run `python -m pipeline analyze`, or widen the "
        "filters."
    )
    st.stop()
if n > len(points):
    st.caption(
        f"Showing a sample of {len(points):,} of {n:,} frames (every flagged frame, then "
        "a fixed pseudo-random sample of the rest), drawn with WebGL. Narrow the filters "
        "to see every point."
    )
else:
    st.caption(
        f"Showing all {filters.plural(n, 'frame')} ({filters.describe(flt)}), drawn with WebGL."
    )

if color == "condition" and not set(opts["conditions"]) - {"unknown"}:
    st.info(
        "No weather in this store, so every frame is 'unknown': import it with "
        "`python -m pipeline weather import CSV --db FILE` (or `weather fetch`).",
        icon=":material/cloud_off:",
    )

fig = charts.map_scatter(points, color, flt.detector)
event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("box", "lasso"))
# each point's customdata[0] is its frame id (in the event a dict {"0": id, "1": pct})
chosen = charts.selected_frame_ids(
    (event.get("selection") or {}).get("points", []) if event else []
)
if chosen:
    ui.set_selection(chosen)
    st.success(f"{filters.plural(len(set(chosen)), 'frame')} selected.")
    c1, c2 = st.columns(2)
    c1.page_link(
        pages.view("Gallery"),
        label="Open the selection in the gallery",
        icon=":material/photo_library:",
        query_params=ui.url_filters(),
    )
    c2.page_link(
        pages.view("Review & export"),
        label="Review the selection",
        icon=":material/checklist:",
        query_params=ui.url_filters(),
    )
else:
    st.caption("Drag a box or lasso on the map to select frames for the gallery and review.")
