"""Clusters: per cluster its size, share of night, a random sample of thumbnails, and the
hour-of-day and date profiles of the filtered frames."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, filters, ui

SAMPLE = 6

flt, opts = ui.current()
st.title("Clusters")
seed = st.session_state.get("clusters_seed", 0)
sizes, profiles, samples = data.get_many(
    ("cluster_sizes", flt), ("cluster_profiles", flt), ("cluster_samples", flt, SAMPLE, seed, True)
)
if sizes.empty:
    st.info("No clusters for these frames: run `python -m pipeline analyze`, or widen the filters.")
    st.stop()
noise = (
    " Noise (-1) holds the frames HDBSCAN put in no cluster."
    if (sizes["cluster"] < 0).any()
    else ""
)
st.caption(
    f"{filters.plural(len(sizes), 'cluster')} over "
    f"{filters.plural(int(sizes['n_frames'].sum()), 'frame')} "
    f"({filters.describe(flt)}).{noise}"
)
c1, c2 = st.columns(2)
c1.plotly_chart(charts.cluster_sizes(sizes), key="clusters_sizes")
c2.plotly_chart(charts.cluster_profile(profiles, "hour"), key="clusters_hour")
st.plotly_chart(charts.cluster_profile(profiles, "day"), key="clusters_day")

if st.button("New random samples", key="clusters_reshuffle"):
    st.session_state["clusters_seed"] = seed + 1
    st.rerun()
thumbs = data.thumbs_of(samples)
for row in sizes.to_dict("records"):
    cluster = int(row["cluster"])
    first = pd.Timestamp(row["first"]).strftime("%Y-%m-%d") if pd.notna(row["first"]) else "?"
    last = pd.Timestamp(row["last"]).strftime("%Y-%m-%d") if pd.notna(row["last"]) else "?"
    ui.cluster_heading(cluster)
    st.caption(
        f"{filters.plural(int(row['n_frames']), 'frame')} · "
        f"{row['night_share'] * 100:.0f} % night · "
        f"{int(row['n_flagged'])} flagged by {flt.detector} · {first} → {last}"
    )
    ui.thumb_grid(
        samples[samples["cluster"] == cluster],
        flt.detector,
        n_cols=SAMPLE,
        key=f"cluster{cluster}",
        thumbs=thumbs,
    )
