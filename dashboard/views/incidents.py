"""Incidents: runs of frames the consensus flags, found when the run was analysed, each with the
plain cause that carries most of its evidence. A timeline over the archive (colour by cause),
a table, and one incident at a time: its frames as a strip, every frame marked junk or keep in
one action (undo puts the earlier verdicts back), and the bad periods as a CSV. The sidebar
filters choose the incidents: one is listed when any of its frames is among the filtered
frames."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, data, filters, ui

STRIP = 12  # frames shown of the chosen incident, spread over it
LISTED = 1_000  # incidents drawn and listed at most: the longest
UNDO = "_incident_undo"  # the last marking, to put back
PICK = "incident_pick"
# The open incident, for the session: the selectbox's own state goes when the user leaves the
# page (Streamlit drops a widget's state on a run that does not draw it) and the URL key with
# it (it belongs to this page), so this key, (run, incident), brings it back on return.
OPEN = "incident_open"

flt, opts = ui.current()
st.title("Incidents")

found: list[str] = []
url_incident = filters.parse_int(st.query_params.to_dict(), "incident", 1, 10_000_000, found)
ui.notices(found)
# A link's incident first, then the one open when the user left this page (in this run),
# then the longest.
kept_run, kept = st.session_state.get(OPEN, (None, None))  # incidents of one consensus
here = (flt.run_id, flt.junk_causes)
wanted = url_incident if url_incident is not None else (kept if kept_run == here else None)

params, found = data.get_many(("run_params", flt.run_id), ("incident_list", flt, LISTED, wanted))
table = found["rows"]
if flt.run_id is None:
    st.info("No analysis run yet: run `python -m pipeline analyze`.")
    st.stop()
if "n_incidents" not in params:
    st.info(
        "This run was analysed before incidents were recorded: run `python -m pipeline "
        "analyze` again to find them."
    )
    st.stop()
gap = params.get("incident_gap_frames", "?")
named = (
    "The cause is the one whose detectors, among the sidebar's junk causes, carry most of "
    "the incident's evidence (the consensus of those causes, found again from their scores; "
    "a run analysed before that evidence was stored names the junk cause with the most score)."
    if flt.junk_causes
    else "The cause is the one whose detectors carry most of the incident's evidence."
)
st.caption(
    f"Runs of frames the consensus flags, in daylight and twilight (a night is not an "
    f"incident), allowing up to {gap} unflagged frames inside one; never across a night. "
    f"{named} Showing the incidents with frames among {filters.describe(flt)}."
)
if table.empty:
    st.success("No incidents among the filtered frames.")
    st.stop()

c1, c2, c3, c4 = st.columns(4)
c1.metric("Incidents", f"{found['n']:,}")
c2.metric("Frames in them", f"{found['n_frames']:,}")
c3.metric("Longest", filters.plural(found["longest"], "frame"))
c4.metric("Marked", f"{found['n_marked']:,}", help="incidents every frame of which has a verdict")

by_id = table.set_index("incident_id")
if wanted is not None and wanted not in by_id.index:
    st.warning(
        f"Incident {wanted} is not among the incidents the filters keep; "
        "showing the longest instead."
        if found["include_known"]
        else f"There is no incident {wanted} in run {flt.run_id}; showing the longest instead."
    )
    wanted = None
pending = st.session_state.pop("_pending_incident", None)
if pending in by_id.index:
    st.session_state[PICK] = pending
if st.session_state.get(PICK) not in by_id.index:
    st.session_state[PICK] = (
        wanted
        if wanted is not None
        else int(
            table.sort_values(["n_frames", "peak_score"], ascending=False)["incident_id"].iloc[0]
        )
    )

event = st.plotly_chart(
    charts.incident_timeline(table, found["n"]),
    key="incidents_timeline",
    on_select="rerun",
    selection_mode=("points",),
)
points = (event.get("selection") or {}).get("points") if event else None
clicked = None
for p in points or []:
    value = charts.custom_value(p)  # the incident id (a dict {"0": id, "1": n} from a browser)
    if value is not None and value == value:
        clicked = int(value)
if clicked is not None and clicked != st.session_state.get("_incident_clicked"):
    st.session_state["_incident_clicked"] = clicked  # a selection stays: apply it once
    if clicked in by_id.index and clicked != st.session_state[PICK]:
        st.session_state["_pending_incident"] = clicked
        st.rerun()

if found["n"] > len(table):
    st.caption(
        f"The {len(table):,} longest of {found['n']:,} incidents are drawn and listed; "
        "narrow the filters to see the others. The CSV holds them all."
    )
shown = table.assign(
    duration_min=table["duration_s"] / 60,
    peak_pct=table["peak_pct"] * 100,
    cause_share=table["cause_share"] * 100,
)[
    [
        "incident_id",
        "started_at",
        "ended_at",
        "duration_min",
        "n_frames",
        "n_flagged",
        "cause",
        "cause_share",
        "peak_pct",
        "n_junk",
        "n_keep",
    ]
]
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    height=min(420, 35 * (len(shown) + 1) + 3),  # every row, no sliver under them
    column_config={
        "incident_id": st.column_config.NumberColumn("incident"),
        "started_at": st.column_config.DatetimeColumn("start", format="YYYY-MM-DD HH:mm"),
        "ended_at": st.column_config.DatetimeColumn("end", format="YYYY-MM-DD HH:mm"),
        "duration_min": st.column_config.NumberColumn("minutes", format="%.0f"),
        "n_frames": st.column_config.NumberColumn("frames"),
        "n_flagged": st.column_config.NumberColumn("flagged"),
        "cause_share": st.column_config.NumberColumn(
            "cause share", format="%.0f %%", help="the cause's share of the incident's evidence"
        ),
        "peak_pct": st.column_config.NumberColumn(
            "peak", format="%.1f %%", help="highest consensus percentile"
        ),
        "n_junk": st.column_config.NumberColumn("junk"),
        "n_keep": st.column_config.NumberColumn("keep"),
    },
)


def _periods_csv() -> str:  # built only when the download is clicked: every incident listed
    return ui.bad_periods(data.get("incidents", flt)).to_csv(index=False)


st.download_button(
    "Bad periods (CSV)",
    _periods_csv,
    "bad-periods.csv",
    "text/csv",
    key="incidents_csv",
    icon=":material/table:",
    help="start, end, cause and frames of every incident the filters keep",
)


def _label(incident_id: int) -> str:
    row = by_id.loc[incident_id]
    when = pd.Timestamp(row["started_at"]).strftime("%Y-%m-%d %H:%M")
    return f"#{incident_id} · {when} · {row['cause']} · {filters.plural(row['n_frames'], 'frame')}"


st.subheader("One incident")
incident_id = st.selectbox("Incident", list(by_id.index), key=PICK, format_func=_label)
st.session_state[OPEN] = (here, int(incident_id))
st.query_params["incident"] = str(int(incident_id))
row = by_id.loc[incident_id]
strip = data.get(
    "incident_strip", flt.run_id, int(incident_id), STRIP, flt.detector, flt.junk_causes
)
ids = strip["ids"]
start = pd.Timestamp(row["started_at"])
end = pd.Timestamp(row["ended_at"])
# the end's date where it is another day's (a run analysed before incidents ended with the day)
until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
st.markdown(
    f"**{ui.literal(row['cause'])}** "
    f"({row['cause_share'] * 100:.0f} % of its evidence) · "
    f"{start:%Y-%m-%d %H:%M} to {until} · {filters.plural(len(ids), 'frame')}, "
    f"{len(strip['flagged']):,} flagged · peak at {row['peak_pct'] * 100:.1f} %"
)
if len(ids) > len(strip["rows"]):
    st.caption(f"{len(strip['rows'])} of its {filters.plural(len(ids), 'frame')}, spread over it.")
ui.thumb_grid(
    strip["rows"],
    flt.detector,
    n_cols=6,
    key=f"incident{incident_id}",
    thumbs=data.thumbs_of(strip["rows"]),
)

b1, b2, b3, b4 = st.columns(4)
for col, verdict, label, icon in (
    (b1, "junk", "junk", ":material/delete:"),
    (b2, "keep", "keep", ":material/check:"),
    (b3, None, "unmarked", ":material/backspace:"),
):
    text = (
        f"Mark all {filters.plural(len(ids), 'frame')} {label}"
        if verdict
        else f"Clear the verdicts of all {len(ids):,}"
    )
    if col.button(text, key=f"incident_{label}", icon=icon, disabled=not ids):
        _, before = data.mark_undoably(ids, verdict)
        st.session_state[UNDO] = {
            "incident": int(incident_id),
            "ids": ids,
            "before": before,
            "verdict": label,
        }
        st.toast(f"Incident {incident_id}: {filters.plural(len(ids), 'frame')} {label}.")
        st.rerun()
undo = st.session_state.get(UNDO)
if undo and undo["incident"] == int(incident_id):
    if b4.button(
        f"Undo ({undo['verdict']})",
        key="incident_undo",
        icon=":material/undo:",
        help="put back the verdicts these frames had before",
    ):
        data.restore_reviews(undo["ids"], undo["before"])
        st.session_state.pop(UNDO)
        st.toast(f"Incident {incident_id}: earlier verdicts restored.")
        st.rerun()
