"""Compare detectors: rank-vs-rank scatter, Spearman matrix, top-k overlap, "A flags it, B does
not" galleries both ways, agreement over time; precision@k and ROC when reviews or an imported
ground truth label some of the filtered frames."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, filters, ui

MAX_ROWS = charts.COMPARE_MAX_FRAMES
GALLERY = 6

flt, opts = ui.current()
st.title("Compare detectors")
dets = opts["detectors"]
if len(dets) < 2:
    st.info("Comparing needs a run with at least two detectors: run `python -m pipeline analyze`.")
    st.stop()

found: list[str] = []
params = st.query_params.to_dict()
url_dets = filters.parse_choice(params, "cmp", dets, found, many=True)
url_k = filters.parse_int(params, "k", 1, 100_000, found)
url_a = filters.parse_choice(params, "a", dets, found)
url_b = filters.parse_choice(params, "b", dets, found)
if url_dets and len(url_dets) < 2:
    found.append("Comparing needs two or more detectors in 'cmp': showing the first four.")
ui.notices(found)
if "compare_dets" not in st.session_state:
    st.session_state["compare_dets"] = (
        url_dets if url_dets and len(url_dets) >= 2 else dets[: min(4, len(dets))]
    )
    # the A and B of a shared link, where they are among the detectors compared
    shown = st.session_state["compare_dets"]
    if url_a in shown:
        st.session_state["compare_a"] = url_a
    if url_b in shown and url_b != url_a:
        st.session_state["compare_b"] = url_b
if "compare_k" not in st.session_state:
    st.session_state["compare_k"] = url_k or 50
chosen = st.multiselect("Detectors (two or more)", dets, key="compare_dets")
k = st.number_input("Top-k (frames)", min_value=1, max_value=100_000, step=10, key="compare_k")
if len(chosen) < 2:
    st.warning("Choose at least two detectors.")
    st.stop()
st.query_params["cmp"] = ",".join(chosen)
st.query_params["k"] = str(int(k))

c1, c2 = st.columns(2)
a = c1.selectbox("A", chosen, index=0, key="compare_a")
b = c2.selectbox("B", [d for d in chosen if d != a], index=0, key="compare_b")
st.query_params["a"], st.query_params["b"] = a, b
# One connection for the whole page: the sample (with each frame's known answer) and both
# galleries (rows, weather and thumbnails).
wide, diffs = data.get_many(
    ("detector_matrix", flt, chosen, MAX_ROWS, True),
    ("top_k_differences", flt, a, b, int(k), GALLERY),
)
if wide.empty:
    st.info("No scored frames match the filters.")
    st.stop()
n = len(wide)
note = (
    f" (a fixed pseudo-random sample of {MAX_ROWS:,}: the charts and the known-answer "
    "curves use the sample; the two galleries use every frame)"
    if n >= MAX_ROWS
    else ""
)
st.caption(
    f"{filters.plural(n, 'frame')}{note} · {filters.describe(flt.replace(threshold_kind='all'))}. "
    "Percentiles are ranks within the run; higher = more abnormal."
)

c1, c2 = st.columns(2)
c1.plotly_chart(charts.rank_scatter(wide, a, b), key="compare_scatter")
c2.plotly_chart(charts.spearman_heatmap(wide, chosen), key="compare_spearman")
c1, c2 = st.columns(2)
c1.plotly_chart(charts.overlap_heatmap(wide, chosen, int(k)), key="compare_overlap")
c2.plotly_chart(charts.agreement_over_time(wide, chosen), key="compare_agreement")

for first, second, (page, total) in ((a, b, diffs["a"]), (b, a, diffs["b"])):
    st.subheader(f"{first} flags it, {second} does not")
    st.caption(ui.not_in_top(total, first, second, int(k), min(GALLERY, total)))
    if len(page):
        ui.thumb_grid(
            page, first, n_cols=GALLERY, key=f"anb_{first}_{second}", thumbs=data.thumbs_of(page)
        )

known = wide.loc[
    wide["label_source"].notna(), ["frame_id", "label_is_anomaly", "label_source"]
].rename(columns={"label_is_anomaly": "is_anomaly", "label_source": "source"})
st.subheader("Against known answers")
if known.empty:
    st.info(
        "No reviews or ground truth for these frames yet: mark frames junk/keep on the "
        "Review page, or import a ground truth (`python -m pipeline demo` does)."
    )
else:
    n_anom = int(known["is_anomaly"].astype(bool).sum())
    src = known["source"].value_counts().to_dict()
    st.caption(
        f"{filters.plural(len(known), 'labelled frame')} ({filters.plural(n_anom, 'anomaly', 'anomalies')}): "
        + ", ".join(f"{v:,} from {k.replace('_', ' ')}" for k, v in src.items())
        + ". A junk/keep review overrides the ground truth."
    )
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        charts.precision_at_k(wide, known, chosen, k_max=max(int(k), 10)), key="compare_patk"
    )
    c2.plotly_chart(charts.roc_curves(wide, known, chosen), key="compare_roc")
