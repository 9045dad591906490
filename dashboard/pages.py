"""The dashboard's pages: one table of (title, view file, URL keys the page owns).

Everything about a page derives from `PAGES`: the navigation (`app.py` builds `st.navigation`
from it, in this order, with the first page as the default), the page links and switches in
the views (`view(title)`), the URL keys a page owns (kept in the URL on that page and dropped
when the user moves to another; `app._sync_url`), the keys the filter parser leaves to the
pages (`PAGE_KEYS`), and the page list of the hostile-URL tests.

A page's URL path is its view file's stem (`views/gallery.py` -> `/gallery`); the first page
is served at `/`. A view reads only the URL keys its page declares here (a test checks it),
and validates them where it reads them (`filters.parse_int`, `filters.parse_choice`).
No Streamlit import: the filters and the tests use this table too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Page:
    """One dashboard page."""

    title: str  # shown in the navigation and as the page's title
    view: str  # the view file, relative to dashboard/
    url_keys: tuple[str, ...] = ()  # URL query keys this page owns

    @property
    def url_path(self) -> str:
        return Path(self.view).stem


PAGES: tuple[Page, ...] = (
    Page("Overview", "views/overview.py"),
    Page("Incidents", "views/incidents.py", ("incident",)),
    Page("Gallery", "views/gallery.py", ("page", "order", "size")),
    Page("Map", "views/map.py", ("color",)),
    Page("Clusters", "views/clusters.py"),
    Page("Compare detectors", "views/compare.py", ("cmp", "k", "a", "b")),
    Page("Frame", "views/frame.py", ("frame",)),
    Page("Review & export", "views/review.py"),
    Page("Runs & errors", "views/runs.py"),
)
DEFAULT = PAGES[0]

#: Every URL key some page owns (the shared filters' keys are `filters.FILTER_KEYS`).
PAGE_KEYS: tuple[str, ...] = tuple(dict.fromkeys(key for p in PAGES for key in p.url_keys))

_BY_TITLE = {p.title: p for p in PAGES}


def page(title: str) -> Page:
    """The page with this title (a KeyError naming the titles for a wrong one)."""
    try:
        return _BY_TITLE[title]
    except KeyError:
        raise KeyError(f"no dashboard page {title!r}; pages: {', '.join(_BY_TITLE)}") from None


def view(title: str) -> str:
    """The view file of a page, for `st.page_link` and `st.switch_page`."""
    return page(title).view
