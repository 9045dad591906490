"""Runs & errors: every analysis run's provenance (model, parameters, timings, status) and the
files that could not be used (ingest errors)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data

st.title("Runs & errors")
counts, runs, errors = data.get_many(("store_counts",), ("runs",), ("ingest_errors",))
cols = st.columns(6)
for col, key in zip(
    cols, ("frames", "embeddings", "analysis_runs", "outlier_scores", "reviews", "ingest_errors")
):
    col.metric(key.replace("_", " "), f"{counts[key]:,}")

st.subheader("Analysis runs")
if runs.empty:
    st.info("No analysis run yet: run `python -m pipeline analyze --db FILE`.")
else:
    table = runs[
        [
            "run_id",
            "status",
            "model",
            "family",
            "dim",
            "n_frames",
            "n_detectors",
            "n_clusters",
            "started_at",
            "finished_at",
            "seconds",
            "code_version",
        ]
    ]
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "run_id": st.column_config.NumberColumn("run"),
            "family": st.column_config.TextColumn("model family"),
            "dim": st.column_config.NumberColumn("embedding dim"),
            "n_frames": st.column_config.NumberColumn("frames"),
            "n_detectors": st.column_config.NumberColumn("detectors"),
            "n_clusters": st.column_config.NumberColumn("clusters"),
            "started_at": st.column_config.DatetimeColumn("started"),
            "finished_at": st.column_config.DatetimeColumn("finished"),
            "seconds": st.column_config.NumberColumn("duration (s)", format="%.1f"),
            "code_version": st.column_config.TextColumn("code version"),
        },
    )
    for row in runs.to_dict("records"):
        label = f"Run {row['run_id']} · {row['model']} · {row['status']}"
        with st.expander(label, expanded=row["run_id"] == runs["run_id"].iloc[0]):
            if row.get("error"):
                st.error(row["error"])
            c1, c2 = st.columns(2)
            c1.write("**Parameters**")
            params = row["params"] or {}
            learned = params.get("learned")
            learned = (
                f" · learned from {learned['n_junk']} junk and {learned['n_keep']} keep "
                f"reviews (the model's share {learned['model_weight']:g})"
                if learned
                else ""
            )
            c1.caption(
                f"{params.get('model', row['model'])} · causes "
                f"{', '.join(params.get('junk_causes') or []) or '–'} · detectors "
                f"{', '.join(params.get('detectors') or []) or '–'}{learned}; every parameter "
                "below (click to unfold)"
            )
            c1.json(params, expanded=False)  # all of them, one click away (a long tree)
            c2.write("**Timings (seconds per step)**")
            timings = row["timings"] or {}
            if timings:
                flat = {k: v for k, v in timings.items() if isinstance(v, (int, float))}
                c2.dataframe(
                    pd.DataFrame({"step": list(flat), "seconds": list(flat.values())}),
                    hide_index=True,
                    width="stretch",
                )
            else:
                c2.caption("No timings recorded.")
            c2.caption(f"weights: {row.get('weights') or '–'}")

st.subheader("Ingest errors")
if errors.empty:
    st.success("No file failed.")
else:
    n = len(errors)
    st.caption(
        f"{n:,} file{'s' if n != 1 else ''} could not be used; each stays listed here "
        "until it is fixed and ingested again."
    )
    by_stage = errors.groupby("stage").size().rename("files").reset_index()
    st.dataframe(by_stage, hide_index=True)
    st.dataframe(errors, hide_index=True, width="stretch")
