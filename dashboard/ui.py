"""Small Streamlit building blocks the views share: current filter, notices, thumbnail grids,
links to the Frame page, and the pending-filter hand-off between pages."""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import pandas as pd
import streamlit as st

from dashboard import charts, data, filters, pages
from store.facts import FrameFilter

# How `pipeline.daylight` told day from night (frames.daylight_source): a frame's few words (the
# Frame page) and what the share of night means and how to tell it better (the Overview's help)
DAYLIGHT_TOLD_BY = {
    "sun": (
        "by the sun",
        "Frames taken with the sun down at the camera's place (its --lat/--lon).",
    ),
    "timezone": (
        "by the time zone's sun",
        "Frames taken with the sun down at its time zone's own place: the camera's place is not "
        "set. `python -m pipeline locate --db FILE --lat LAT --lon LON` puts the sun where the "
        "camera is; `--daylight-from brightness` tells day by each frame's light, for a camera "
        "lit by its own lights (indoors).",
    ),
    "brightness": (
        "by brightness",
        "Frames too dark to be day, by each frame's brightness (no place and no time zone, or "
        "--daylight-from brightness). `python -m pipeline locate --db FILE --timezone TZ` tells "
        "night by the sun instead.",
    ),
}

SELECTION = "selection"  # frame ids picked on the map or in the gallery
TICKED = "_selection_ticked"  # True while the selection is the gallery's own ticks
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


def set_selection(ids: Iterable[int], ticked: bool = False) -> None:
    """Replace the selection. `ticked` says it was made by ticking cards (the Gallery then
    keeps showing the page ticked on); a selection drawn on the map is not, and the Gallery
    opens on it."""
    st.session_state[SELECTION] = sorted({int(i) for i in ids})
    st.session_state[TICKED] = bool(ticked)


def selection_ticked() -> bool:
    """Whether the selection was made by ticking cards rather than drawn on the map."""
    return bool(st.session_state.get(TICKED, False))


def _tick(frame_id: int, key: str) -> None:
    """A card's checkbox changed (a callback, run before the page): add its frame to the
    selection or take it out. The selection is the one truth; the checkboxes are drawn from
    it on every run."""
    picked = set(selection())
    if st.session_state.get(key):
        picked.add(frame_id)
    else:
        picked.discard(frame_id)
    set_selection(picked, ticked=True)


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
# large ~430; large stays over 320 pixels down to a 1,100-pixel window). A narrower page puts
# fewer cards on a line (`LAYOUT_CSS`).
CARD_COLUMNS = {"small": 6, "medium": 4, "large": 2}
_VERDICT_COLORS = {"junk": "red", "keep": "green"}
CARDS_PREFIX = "cards_"  # the key of every card grid's container (`LAYOUT_CSS` finds them)

# Streamlit cannot read the window's width server-side, so a narrow page is the browser's
# business (CSS, `layout_css`). A card grid draws each row of cards as its own row of columns
# and lays that row out as a CSS grid of equal cells at least MIN_COLUMN wide: as many a line
# as fit, the rest on the next line in the same order and at the same width. In a 1,400-pixel
# window nothing moves (6 cards a row are ~140 pixels wide); at 800 pixels a row of 6 shows 3
# a line. Once the main area is narrower than NARROW, no other column is narrower than
# MIN_COLUMN either (a row of 4 metrics or buttons shows 3 a line and the 4th below). Text
# that still does not fit (a badge, a button, a metric) wraps onto a second line instead of
# ending in "...". Below 640 pixels Streamlit stacks columns itself: these rules leave that be.
# A row of columns inside a container keyed `STACK_PREFIX...` (e.g. the Frame page's picture
# beside its scores) stacks instead, one column under the other at full width, once the main
# area is narrower than NARROW: its columns hold charts and tables that need more than
# MIN_COLUMN (at 800 pixels the Frame page's score column was 187 pixels, cutting both).
MIN_COLUMN = "7.5rem"
NARROW = "50rem"
STACK_PREFIX = "stack_"
_MAIN = '[data-testid="stMain"]'
_ROW = '[data-testid="stHorizontalBlock"]'
_COLUMN = f'{_ROW} > [data-testid="stColumn"]'
_CARDS = f'{_MAIN} [class*="st-key-{CARDS_PREFIX}"]'
# the keyed container's own row (Streamlit 1.67 wraps it in a stLayoutWrapper), not the rows
# inside its columns
_STACKED = f'{_MAIN} [class*="st-key-{STACK_PREFIX}"] > [data-testid="stLayoutWrapper"] > {_ROW}'
LAYOUT_CSS = f"""
[data-testid="stMainBlockContainer"] {{ container: st-main / inline-size; }}
@media (min-width: 640px) {{
  {_CARDS} {_ROW} {{
    display: grid;
    grid-template-columns: repeat(auto-fit, minmax({MIN_COLUMN}, 1fr));
  }}
  {_CARDS} {_COLUMN} {{ width: auto; min-width: 0; }}
  @container st-main (max-width: {NARROW}) {{
    {_MAIN} {_ROW} {{ flex-wrap: wrap; }}
    {_MAIN} {_COLUMN} {{ min-width: {MIN_COLUMN}; }}
    {_STACKED} {{ flex-direction: column; }}
    {_STACKED} > [data-testid="stColumn"] {{ width: 100%; flex: 1 1 auto; min-width: 0; }}
  }}
}}
{_CARDS} span.stMarkdownBadge {{ white-space: normal; }}
{_MAIN} [data-testid="stMetricValue"] [data-testid="stMarkdownContainer"],
{_MAIN} [data-testid="stColumn"] button div:has(> p),
{_MAIN} [data-testid="stColumn"] button p {{
  white-space: normal;
  text-overflow: clip;
}}
"""


def layout_css() -> None:
    """Apply `LAYOUT_CSS` to the page (style only: it takes no space)."""
    st.html(f"<style>{LAYOUT_CSS}</style>")


def badges_for(
    row: pd.Series | dict, detector: str, compact: bool = False
) -> list[tuple[str, str]]:
    """A card's marks, each (label, colour): the detector's percentile (orange when the
    detector flags the frame, else grey) and, once the frame is reviewed, its verdict as a
    mark of its own (red junk, green keep), so a narrow card never hides the verdict behind
    the score. `compact` leaves the detector's name out (small cards: the page says which
    detector ranks them)."""
    pct = row.get("score_pct")
    name = "" if compact else f"{detector} "
    # a no-break space: a narrow card wraps after the name, never between number and "%"
    label = f"{name}{pct * 100:.1f}\u00a0%" if pct is not None and pd.notna(pct) else f"{name}–"
    flagged = row.get("is_outlier")
    is_flagged = flagged is not None and pd.notna(flagged) and bool(flagged)
    marks = [(label, "orange" if is_flagged else "gray")]
    verdict = present(row.get("verdict"))
    if verdict:
        marks.append((str(verdict), _VERDICT_COLORS.get(verdict, "gray")))
    return marks


_BRACKETS = re.compile(r"([\[\]])")


def _badges_markdown(marks: list[tuple[str, str]]) -> str:
    """The marks as Streamlit badge directives on one line (they wrap when narrow), with
    brackets escaped as `st.badge` escapes them."""
    escaped = [(_BRACKETS.sub(r"\\\1", label), color) for label, color in marks]
    return " ".join(f":{color}-badge[{label}]" for label, color in escaped)


def thumb_grid(
    rows: pd.DataFrame,
    detector: str,
    n_cols: int = 6,
    pick: bool = False,
    key: str = "grid",
    thumbs: dict[int, bytes] | None = None,
    compact: bool = False,
    note: Callable[[dict], str] | None = None,
) -> None:
    """Cards of frames, a row of `n_cols` at a time (fewer a line on a narrow page): the
    thumbnail, the detector's percentile and the verdict as marks, `note(row)` when given
    (the Frame page's neighbours: rank and distance), the time, a link to the Frame page,
    details on demand (weather, cluster and every detector's score, read when the card's
    Details is opened) and, with `pick`, a checkbox that adds the frame to the selection or
    takes it out. The checkboxes are drawn from the selection on every run, so ticks add up
    and a selection changed elsewhere (Select this page, Clear selection) shows at once.
    `compact` marks leave the detector's name out (small cards, whose page names the ranking
    detector)."""
    if rows.empty:
        st.info("No frames to show.")
        return
    ids = [int(i) for i in rows["frame_id"]]
    if thumbs is None:
        thumbs = data.get("thumbnails", ids)
    picked = set(selection())
    records = rows.to_dict("records")
    with st.container(key=f"{CARDS_PREFIX}{key}"):
        for start in range(0, len(records), n_cols):
            cols = st.columns(n_cols)
            for col, row in zip(cols, records[start : start + n_cols]):
                with col:
                    _card(row, detector, key, thumbs, compact, note, picked if pick else None)


def _card(
    row: dict,
    detector: str,
    key: str,
    thumbs: dict[int, bytes],
    compact: bool,
    note: Callable[[dict], str] | None,
    picked: set[int] | None,
) -> None:
    """One card of `thumb_grid` (`picked`: the selection, when the card has a checkbox)."""
    fid = int(row["frame_id"])
    with st.container(border=True):
        if fid in thumbs:
            st.image(thumbs[fid], width="stretch")
        else:
            st.caption("(no thumbnail)")
        st.markdown(_badges_markdown(badges_for(row, detector, compact)))
        if note is not None:
            st.caption(note(row))
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
        if picked is not None:
            tick = f"{PICK_PREFIX}{key}_{fid}"
            st.session_state[tick] = fid in picked  # before the widget: drawn from the selection
            st.checkbox("select", key=tick, on_change=_tick, args=(fid, tick))


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


def score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """A frame's scores (`store.facts.scores_for`) as the Frame page lists them: detector,
    score, percentile and flagged, the numbers as text, and "not scored" (flagged left
    empty) for a detector that stored no score for the frame."""
    scored = scores["score"].notna() & scores["score_pct"].notna()
    return pd.DataFrame(
        {
            "detector": scores["detector"].to_numpy(),
            "score": [
                f"{s:.4f}" if ok else charts.NOT_SCORED for s, ok in zip(scores["score"], scored)
            ],
            "percentile": [
                f"{p * 100:.1f} %" if ok else charts.NOT_SCORED
                for p, ok in zip(scores["score_pct"], scored)
            ],
            "flagged": [
                bool(f) if ok and pd.notna(f) else None
                for f, ok in zip(scores["is_outlier"], scored)
            ],
        }
    )


def not_in_top(n_missing: int, first: str, second: str, k: int, n_shown: int) -> str:
    """The Compare page's line over a "first flags it, second does not" gallery: how many of
    `first`'s top `k` frames are not in `second`'s top `k` ("1 ... is", "2 ... are"), and how
    many of them, the highest by `first`, the gallery shows."""
    top = f"{first}'s top {filters.plural(k, 'frame')}"
    if n_missing == 0:
        return f"Every one of {top} is in {second}'s top {int(k):,}."
    verb = "is" if n_missing == 1 else "are"
    shown = "the highest" if n_shown == 1 else f"the {n_shown:,} highest"
    return f"{n_missing:,} of {top} {verb} not in {second}'s top {int(k):,}; {shown} by {first}:"


def cluster_heading(cluster: int) -> None:
    """A cluster's heading on the Clusters page: a square in the cluster's colour (the one its
    bars and lines have on every chart, `charts.cluster_color`) and its name, over a rule.
    Markdown colours text only by name (`:blue[...]`), so the square is an inline span with
    the colour's hex value."""
    color = charts.cluster_color(cluster)
    st.markdown(
        f'### <span style="color: {color}" title="{color}">■</span> '
        f"{charts.cluster_label(cluster)}",
        unsafe_allow_html=True,
    )
    st.html(f'<hr style="margin: 0; border: 0; border-top: 2px solid {color}; opacity: 0.6">')


def neighbour_note(row: pd.Series | dict) -> str:
    """A neighbour card's line on the Frame page: its rank and its distance."""
    rank, distance = row.get("rank"), row.get("distance")
    parts = [f"rank {int(rank)}" if rank is not None and pd.notna(rank) else "rank ?"]
    if distance is not None and pd.notna(distance):
        parts.append(f"distance\u00a0{distance:.3f}")  # wraps before "distance", not in it
    return " · ".join(parts)


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
