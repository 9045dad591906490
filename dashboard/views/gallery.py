"""Gallery: thumbnails of the filtered frames ranked by the chosen detector's score, paged, at
the size the user picks (small, medium, large); each card shows one badge (the detector's
percentile and the verdict), the time and a link to the Frame page, with weather and every
score on demand; tick frames to select them for bulk review."""

from __future__ import annotations

import math

import streamlit as st

from dashboard import data, filters, pages, ui
from store.facts import GALLERY_ORDERS

PAGE_SIZES = (12, 24, 48, 96)
ORDER_LABELS = {
    "score": "highest score first",
    "score_asc": "lowest score first",
    "time": "oldest first",
    "time_desc": "newest first",
}
SIZES = list(ui.CARD_COLUMNS)

flt, opts = ui.current()
st.title("Gallery")

found: list[str] = []
params = st.query_params.to_dict()
url_order = filters.parse_choice(params, "order", list(GALLERY_ORDERS), found)
url_page = filters.parse_int(params, "page", 1, 10_000_000, found)
url_size = filters.parse_choice(params, "size", SIZES, found)
ui.notices(found)
if "gallery_order" not in st.session_state:
    st.session_state["gallery_order"] = url_order or "score"
if "gallery_page" not in st.session_state:
    st.session_state["gallery_page"] = url_page or 1
if "gallery_thumb" not in st.session_state:
    st.session_state["gallery_thumb"] = url_size or "medium"

sel = ui.selection()
only_sel = False
if sel:
    # On when the selection was drawn on the map (the Gallery opens on it); off while it is
    # the ticks of this page, so ticking a card never swaps the page for the selection.
    only_sel = st.toggle(
        f"Only the {filters.plural(len(sel), 'selected frame')}",
        value=not ui.selection_ticked(),
        key="gallery_only_sel",
    )
view = flt.replace(frame_ids=tuple(sel)) if only_sel else flt

c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
order = c1.selectbox(
    "Order", list(GALLERY_ORDERS), key="gallery_order", format_func=ORDER_LABELS.get
)
thumb = (
    c2.segmented_control("Thumbnails", SIZES, key="gallery_thumb", format_func=str.capitalize)
    or "medium"
)
size = c3.selectbox("Per page", PAGE_SIZES, index=1, key="gallery_size")
got = data.get("gallery_page", view, st.session_state["gallery_page"] - 1, size, order)
n_pages = max(1, math.ceil(got["total"] / size))
if st.session_state["gallery_page"] > n_pages:  # the filters shrank the result: last page
    st.session_state["gallery_page"] = n_pages
    got = data.get("gallery_page", view, n_pages - 1, size, order)
rows, total = got["rows"], got["total"]
page = c4.number_input(
    f"Page (of {n_pages})", min_value=1, max_value=n_pages, step=1, key="gallery_page"
)
st.query_params["page"] = str(page)
st.query_params["order"] = order
st.query_params["size"] = thumb

ranked = f"ranked by {flt.detector}" if order.startswith("score") else "in time order"
st.caption(
    f"{filters.plural(total, 'frame')} ({filters.describe(view)}), {ranked}; "
    f"showing {len(rows)} on page {page} of {n_pages}."
)
ui.thumb_grid(
    rows,
    flt.detector,
    n_cols=ui.CARD_COLUMNS[thumb],
    pick=True,
    key="gallery",
    thumbs=data.thumbs_of(rows),
    compact=thumb == "small",
)

if len(rows):
    b1, b2, b3, b4 = st.columns(4)
    page_ids = [int(i) for i in rows["frame_id"]]
    if b1.button("Select this page", key="gallery_pick_page"):
        ui.set_selection(set(ui.selection()) | set(page_ids), ticked=True)
        st.rerun()  # the cards' checkboxes are drawn from the selection
    picked = ui.selection()
    if b2.button(f"Mark {len(picked)} selected junk", disabled=not picked, key="gallery_junk"):
        data.set_verdicts(picked, "junk")
        st.toast(f"Marked {filters.plural(len(picked), 'frame')} junk.")
        st.rerun()
    if b3.button(f"Mark {len(picked)} selected keep", disabled=not picked, key="gallery_keep"):
        data.set_verdicts(picked, "keep")
        st.toast(f"Marked {filters.plural(len(picked), 'frame')} keep.")
        st.rerun()
    b4.page_link(
        pages.view("Review & export"),
        label="Review & export",
        icon=":material/checklist:",
        query_params=ui.url_filters(),
    )
