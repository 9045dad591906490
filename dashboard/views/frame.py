"""Frame: the full image when the original is reachable under its root (else the thumbnail),
metadata, every score with its percentile, weather, nearest neighbours, and a junk/keep verdict.
The frame id comes from the URL (validated as an integer of a frame in the store)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, ui

flt, opts = ui.current()
st.title("Frame")

frame_id = ui.page_url_int("frame", 1, 2**62)
if frame_id is None:
    frame_id = st.session_state.get("frame_id")
if frame_id is None:
    first = data.get("frame_ids", flt, 1)
    frame_id = first[0] if first else None
if frame_id is None:
    st.info("No frame to show: open one from the gallery.")
    st.stop()

detail, near, scores, nb, own_thumb = data.get_many(
    ("frame_detail", int(frame_id), flt.run_id),
    ("adjacent_frames", int(frame_id)),
    ("scores_for", flt.run_id, [int(frame_id)], flt.junk_causes),
    ("neighbor_page", flt.run_id, int(frame_id), flt.detector, flt.junk_causes),
    ("thumbnails", [int(frame_id)]),
)
if detail is None:
    st.warning(f"There is no frame {frame_id} in this store.")
    st.stop()
st.session_state["frame_id"] = int(frame_id)
st.query_params["frame"] = str(int(frame_id))

when = (
    pd.Timestamp(detail["taken_at"]).strftime("%Y-%m-%d %H:%M:%S")
    if pd.notna(detail["taken_at"])
    else "unknown time"
)
st.caption(
    f"Frame {frame_id} · {ui.literal(detail['path'])} · {ui.literal(when)} (camera clock, "
    f"from {ui.literal(detail['time_source'])})"
)

n1, n2, _ = st.columns([1, 1, 4])
if near["prev"] is not None:
    with n1:
        ui.frame_link(near["prev"], "previous", ":material/arrow_back:")
if near["next"] is not None:
    with n2:
        ui.frame_link(near["next"], "next", ":material/arrow_forward:")

# the picture beside its scores, one under the other in a narrow window (`ui.STACK_PREFIX`)
with st.container(key=f"{ui.STACK_PREFIX}frame"):
    left, right = st.columns([3, 2])
with left:
    original = data.original_bytes(detail["root"], detail["path"])
    if original is not None:
        st.image(original, width="stretch", caption="original file")
    else:
        if int(frame_id) in own_thumb:
            st.image(
                own_thumb[int(frame_id)],
                width="stretch",
                caption="thumbnail (the original file is not reachable from here)",
            )
        else:
            st.info("Neither the original file nor a thumbnail is available.")
    verdict = detail.get("verdict")
    note = detail.get("review_note")
    st.write(
        f"Verdict: **{verdict or 'not reviewed'}**"
        + (f" · note: {ui.literal(note)}" if note else "")
    )
    b1, b2, b3 = st.columns(3)
    if b1.button("Junk", key="frame_junk", icon=":material/delete:", disabled=verdict == "junk"):
        data.set_verdicts([int(frame_id)], "junk")
        st.rerun()
    if b2.button("Keep", key="frame_keep", icon=":material/check:", disabled=verdict == "keep"):
        data.set_verdicts([int(frame_id)], "keep")
        st.rerun()
    if b3.button("Clear", key="frame_clear", disabled=verdict is None):
        data.set_verdicts([int(frame_id)], None)
        st.rerun()

with right:
    if not scores.empty:
        order = [d for d in opts["detectors"] if d in set(scores["detector"])]
        scores = scores.set_index("detector").loc[order].reset_index()
    st.plotly_chart(charts.frame_scores(scores), key="frame_scores")
    if not scores.empty:
        st.dataframe(
            ui.score_table(scores),
            hide_index=True,
            width="stretch",
            column_config={
                "score": st.column_config.TextColumn(
                    "score", help="raw score; higher = more abnormal"
                ),
                "percentile": st.column_config.TextColumn("percentile"),
                "flagged": st.column_config.CheckboxColumn("flagged"),
            },
        )


def _fmt(value, unit="", digits=1):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _daylight_by(detail: dict) -> str:
    by = ui.DAYLIGHT_TOLD_BY.get(detail.get("daylight_source"), ("–",))[0]
    elevation = detail.get("sun_elevation")
    return by if elevation is None or pd.isna(elevation) else f"{by}, {elevation:.1f}°"


st.subheader("Metadata")
meta = {
    "taken at (camera clock)": when,
    "taken at (UTC)": _fmt(detail.get("taken_at_utc")),
    "time source": detail.get("time_source"),
    "size": f"{_fmt(detail.get('width'))} × {_fmt(detail.get('height'))} px, "
    f"{_fmt((detail.get('file_bytes') or 0) / 1e6, ' MB', 2)}",
    "daylight": f"{detail.get('daylight') or '–'} ({_daylight_by(detail)})",
    "mean luma (0-255)": _fmt(detail.get("mean_luma")),
    "contrast (std of luma)": _fmt(detail.get("contrast")),
    "sharpness (Laplacian variance)": _fmt(detail.get("sharpness")),
    "colourfulness": _fmt(detail.get("colorfulness")),
    "cluster": charts.cluster_label(detail.get("cluster")),
    "ground truth": (
        "–"
        if detail.get("truth_is_anomaly") is None or pd.isna(detail.get("truth_is_anomaly"))
        else f"{'anomaly' if detail['truth_is_anomaly'] else 'normal'} ({detail.get('truth_kind')})"
    ),
}
weather = {
    "condition": detail.get("condition"),
    "observed at (UTC)": _fmt(detail.get("weather_observed_at")),
    "station": _fmt(detail.get("weather_station")),
    "temperature": _fmt(detail.get("temperature_c"), " °C"),
    "precipitation": _fmt(detail.get("precipitation_mm"), " mm/h"),
    "cloud cover": _fmt(detail.get("cloud_cover_pct"), " %", 0),
    "wind": _fmt(detail.get("wind_speed_ms"), " m/s"),
    "visibility": _fmt(detail.get("visibility_km"), " km"),
}
with st.container(key=f"{ui.STACK_PREFIX}frame_meta"):  # stacked too in a narrow window
    m1, m2 = st.columns(2)
m1.dataframe(
    pd.DataFrame({"field": list(meta), "value": [str(v) for v in meta.values()]}),
    hide_index=True,
    width="stretch",
)
m2.dataframe(
    pd.DataFrame({"weather": list(weather), "value": [str(v) for v in weather.values()]}),
    hide_index=True,
    width="stretch",
)

st.subheader("Nearest neighbours in embedding space")
if nb.empty:
    st.caption("No neighbours stored for this frame in the chosen run.")
else:
    st.caption(
        "Nearest first: each card shows its rank (1 = nearest) and its distance to this "
        "frame in the run's PCA space."
    )
    ui.thumb_grid(
        nb,
        flt.detector,
        n_cols=min(6, len(nb)),
        key="nb",
        thumbs=data.thumbs_of(nb),
        note=ui.neighbour_note,
    )
