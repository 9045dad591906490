"""Small Streamlit building blocks the views share: current filter, notices, thumbnail grids,
links to the Frame page, and the pending-filter hand-off between pages."""

from __future__ import annotations

import re
from typing import Any, Iterable

import pandas as pd
import streamlit as st

from dashboard import charts, data, filters, pages
from store.facts import FrameFilter

SELECTION = "selection"      # frame ids picked on the map or in the gallery
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


def frame_link(frame_id: int, label: str | None = None,
               icon: str = ":material/open_in_full:") -> None:
    st.page_link(pages.view("Frame"), label=label or f"Open frame {frame_id}", icon=icon,
                 query_params={**url_filters(), "frame": str(int(frame_id))})


def caption_for(row: pd.Series | dict, detector: str) -> str:
    when = pd.Timestamp(row["taken_at"]).strftime("%Y-%m-%d %H:%M") if pd.notna(
        row.get("taken_at")) else "no time"
    parts = [when, literal(row.get("condition") or "unknown")]
    temp = row.get("temperature_c")
    if temp is not None and pd.notna(temp):
        parts.append(f"{temp:.0f} °C")
    parts.append(charts.cluster_label(row.get("cluster")))
    pct = row.get("score_pct")
    if pct is not None and pd.notna(pct):
        parts.append(f"{detector} {pct * 100:.1f} %")
    if row.get("verdict"):
        parts.append(f"marked {literal(row['verdict'])}")
    return " · ".join(parts)


def thumb_grid(rows: pd.DataFrame, detector: str, n_cols: int = 6, pick: bool = False,
               scores: pd.DataFrame | None = None, key: str = "grid",
               thumbs: dict[int, bytes] | None = None) -> None:
    """Thumbnails with time, weather, cluster and score; a link to each frame; optional
    checkboxes that add frames to the selection."""
    if rows.empty:
        st.info("No frames to show.")
        return
    ids = [int(i) for i in rows["frame_id"]]
    if thumbs is None:
        thumbs = data.get("thumbnails", ids)
    picked = set(selection())
    score_text: dict[int, str] = {}
    if scores is not None and not scores.empty:
        for fid, part in scores.groupby("frame_id"):
            part = part.set_index("detector").reindex(
                [d for d in st.session_state["_opts"]["detectors"] if d in set(part["detector"])])
            score_text[int(fid)] = ", ".join(f"{d} {p * 100:.0f}%" for d, p in
                                             part["score_pct"].items() if pd.notna(p))
    cols = st.columns(n_cols)
    for i, row in enumerate(rows.to_dict("records")):
        fid = int(row["frame_id"])
        with cols[i % n_cols]:
            with st.container(border=True):
                if fid in thumbs:
                    st.image(thumbs[fid], width="stretch")
                else:
                    st.caption("(no thumbnail)")
                st.caption(caption_for(row, detector))
                if fid in score_text:
                    st.caption(score_text[fid])
                frame_link(fid, f"Frame {fid}")
                if pick:
                    checked = st.checkbox("select", value=fid in picked,
                                          key=f"{PICK_PREFIX}{key}_{fid}")
                    if checked:
                        picked.add(fid)
                    else:
                        picked.discard(fid)
    if pick:
        set_selection(picked)


def page_url_int(key: str, lo: int, hi: int) -> int | None:
    """A validated integer page parameter from the URL (a notice when malformed)."""
    found: list[str] = []
    value = filters.parse_int(st.query_params.to_dict(), key, lo, hi, found)
    notices(found)
    return value
