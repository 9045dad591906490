"""Small Streamlit building blocks the views share: current filter, notices, thumbnail grids,
links to the Frame page, and the pending-filter hand-off between pages."""

from __future__ import annotations

import re
from typing import Any, Iterable

import pandas as pd
import streamlit as st

from dashboard import charts, data, filters, pages
from store.facts import FrameFilter

SELECTION = "selection"  # frame ids picked on the map or in the gallery
PICK_PREFIX = "pick_"


def current() -> tuple[FrameFilter, dict[str, Any]]:
    """The sidebar's filter and the store's options (set by app.py before the page runs)."""
    return st.session_state["_flt"], st.session_state["_opts"]


def url_filters() -> dict[str, str]:
    """The filter part of the URL, to carry into links."""
    return dict(st.session_state.get("_url", {}))


def notices(items: Iterable[str]) -> None:
    items = list(items)
    if items:
        st.warning("\n\n".join(items), icon=":material/report:")


def selection() -> list[int]:
    return list(st.session_state.get(SELECTION, []))


def set_selection(ids: Iterable[int]) -> None:
    st.session_state[SELECTION] = sorted({int(i) for i in ids})


def request_filter(**changes: Any) -> None:
    """Ask app.py to change sidebar filters on the next run (widgets can't change mid-run)."""
    pending = st.session_state.setdefault("_pending", {})
    pending.update(changes)


# Characters Markdown, LaTeX and Streamlit's directives (":red[...]", ":material/x:") give a
# meaning to; a backslash before each makes Streamlit show them as they are.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|$~:=^&])")


def literal(text: Any) -> str:
    """Text from a file name, a note or a CSV, escaped so Markdown shows it as written."""
    return _MARKDOWN.sub(r"\\\1", str(text)).replace("\n", " ")


def frame_link(
    frame_id: int, label: str | None = None, icon: str = ":material/open_in_full:"
) -> None:
    st.page_link(
        pages.view("Frame"),
        label=label or f"Open frame {frame_id}",
        icon=icon,
        query_params={**url_filters(), "frame": str(int(frame_id))},
    )


def caption_for(row: pd.Series | dict, detector: str) -> str:
    when = (
        pd.Timestamp(row["taken_at"]).strftime("%Y-%m-%d %H:%M")
        if pd.notna(row.get("taken_at"))
        else "no time"
    )
    parts = [when, literal(present(row.get("condition")) or "unknown")]
    temp = row.get("temperature_c")
    if temp is not None and pd.notna(temp):
        parts.append(f"{temp:.0f} °C")
    parts.append(charts.cluster_label(row.get("cluster")))
    pct = row.get("score_pct")
    if pct is not None and pd.notna(pct):
        parts.append(f"{detector} {pct * 100:.1f} %")
    verdict = present(row.get("verdict"))
    if verdict:
        parts.append(f"marked {literal(verdict)}")
    return " · ".join(parts)


def present(value: Any) -> Any:
    """`value`, or None where a table cell holds nothing: None, NaN (a text column of a page
    whose other rows have text reads NaN for its NULLs) or an empty text."""
    if isinstance(value, str):
        return value or None
    return None if value is None or pd.isna(value) else value


# Thumbnail sizes the gallery offers: cards per row in the wide layout (a 1,400-pixel window
# with the sidebar open leaves ~940 pixels: small pictures are ~130 pixels wide, medium ~200,
# large ~430; large stays over 320 pixels down to a 1,100-pixel window).
CARD_COLUMNS = {"small": 6, "medium": 4, "large": 2}
_VERDICT_COLORS = {"junk": "red", "keep": "green"}


def badge_for(row: pd.Series | dict, detector: str, compact: bool = False) -> tuple[str, str]:
    """A card's one badge: the detector's percentile and the verdict, and its colour (the
    verdict's, else orange when the detector flags the frame, else grey). `compact` leaves the
    detector's name out (small cards: the page says which detector ranks them)."""
    pct = row.get("score_pct")
    name = "" if compact else f"{detector} "
    label = f"{name}{pct * 100:.1f} %" if pct is not None and pd.notna(pct) else f"{name}–"
    verdict = present(row.get("verdict"))
    if verdict:
        label += f" · {verdict}"
    flagged = row.get("is_outlier")
    color = _VERDICT_COLORS.get(verdict) or (
        "orange" if flagged is not None and pd.notna(flagged) and bool(flagged) else "gray"
    )
    return label, color


def thumb_grid(
    rows: pd.DataFrame,
    detector: str,
    n_cols: int = 6,
    pick: bool = False,
    key: str = "grid",
    thumbs: dict[int, bytes] | None = None,
    compact: bool = False,
) -> None:
    """Cards of frames: the thumbnail, one badge (the detector's percentile and the verdict),
    the time, a link to the Frame page, details on demand (weather, cluster and every
    detector's score, read when the card's Details is opened) and, with `pick`, a checkbox
    that adds the frame to the selection. `compact` badges leave the detector's name out
    (small cards, whose page names the ranking detector)."""
    if rows.empty:
        st.info("No frames to show.")
        return
    ids = [int(i) for i in rows["frame_id"]]
    if thumbs is None:
        thumbs = data.get("thumbnails", ids)
    picked = set(selection())
    cols = st.columns(n_cols)
    for i, row in enumerate(rows.to_dict("records")):
        fid = int(row["frame_id"])
        with cols[i % n_cols]:
            with st.container(border=True):
                if fid in thumbs:
                    st.image(thumbs[fid], width="stretch")
                else:
                    st.caption("(no thumbnail)")
                label, color = badge_for(row, detector, compact)
                st.badge(label, color=color)
                when = (
                    pd.Timestamp(row["taken_at"]).strftime("%Y-%m-%d %H:%M")
                    if pd.notna(row.get("taken_at"))
                    else "no time"
                )
                st.caption(when)
                frame_link(fid, f"Frame {fid}")
                more = st.expander("Details", key=f"{key}_more_{fid}", on_change="rerun")
                if more.open:
                    with more:
                        _details(row, detector)
                if pick:
                    checked = st.checkbox(
                        "select", value=fid in picked, key=f"{PICK_PREFIX}{key}_{fid}"
                    )
                    if checked:
                        picked.add(fid)
                    else:
                        picked.discard(fid)
    if pick:
        set_selection(picked)


def _details(row: dict, detector: str) -> None:
    """A card's details: weather, daylight, cluster, and every detector's percentile."""
    st.caption(caption_for(row, detector))
    rain = row.get("precipitation_mm")
    if rain is not None and pd.notna(rain):
        st.caption(f"rain {rain:.1f} mm/h · {literal(row.get('daylight') or 'daylight unknown')}")
    flt, opts = current()
    scores = data.get("scores_for", flt.run_id, [int(row["frame_id"])], flt.junk_causes)
    if scores.empty:
        st.caption("No scores in this run.")
        return
    order = [d for d in opts["detectors"] if d in set(scores["detector"])]
    part = scores.set_index("detector").reindex(order)
    st.caption(
        ", ".join(
            f"{d} {p * 100:.0f}%" + (" ⚑" if f else "")
            for d, p, f in zip(part.index, part["score_pct"], part["is_outlier"])
            if pd.notna(p)
        )
    )


def bad_periods(incidents: pd.DataFrame) -> pd.DataFrame:
    """The bad periods of a list of incidents (`store.facts.incidents`), as the Incidents
    page exports them: start, end, cause, frames, then flagged, incident_id, peak_frame_id."""
    return incidents.rename(
        columns={
            "started_at": "start",
            "ended_at": "end",
            "n_frames": "frames",
            "n_flagged": "flagged",
            "frame_id": "peak_frame_id",
        }
    )[["start", "end", "cause", "frames", "flagged", "incident_id", "peak_frame_id"]]


def page_url_int(key: str, lo: int, hi: int) -> int | None:
    """A validated integer page parameter from the URL (a notice when malformed)."""
    found: list[str] = []
    value = filters.parse_int(st.query_params.to_dict(), key, lo, hi, found)
    notices(found)
    return value
