"""The page table is the one list of pages: every view file is in it, and a view reads exactly the
URL keys its page declares (else `app._sync_url` would drop the key the view relies on).

The URL keys a view uses are read from its source: the key argument of `filters.parse_int`,
`filters.parse_choice` and `ui.page_url_int`, and every string subscript or `.get()` of
`st.query_params` or of a dict taken from it (`params = st.query_params.to_dict()`).
"""

from __future__ import annotations

import ast

import pytest

from dashboard import filters, pages
from tests.conftest import REPO

DASHBOARD = REPO / "dashboard"
_KEY_ARG = {("filters", "parse_int"): 1, ("filters", "parse_choice"): 1, ("ui", "page_url_int"): 0}


def _is_query_params(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "query_params"
        and isinstance(node.value, ast.Name)
        and node.value.id == "st"
    )


def url_keys_used(source: str) -> set[str]:
    """String keys the code reads from or writes to the URL query."""
    tree = ast.parse(source)
    aliases = set()  # names bound to st.query_params or st.query_params.to_dict()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            value = node.value
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute):
                value = value.func.value
            if _is_query_params(value):
                aliases.add(node.targets[0].id)

    def is_params(node: ast.AST) -> bool:
        return _is_query_params(node) or (isinstance(node, ast.Name) and node.id in aliases)

    keys = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and is_params(node.value)
            and isinstance(node.slice, ast.Constant)
        ):
            keys.add(node.slice.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            position = _KEY_ARG.get((owner, func.attr))
            if func.attr == "get" and is_params(func.value):
                position = 0
            if (
                position is not None
                and len(node.args) > position
                and isinstance(node.args[position], ast.Constant)
            ):
                keys.add(node.args[position].value)
    return keys


def test_every_view_file_is_a_page_and_titles_and_paths_are_unique():
    views = {
        path.relative_to(DASHBOARD).as_posix()
        for path in (DASHBOARD / "views").glob("*.py")
        if path.name != "__init__.py"
    }
    assert {page.view for page in pages.PAGES} == views
    assert len({page.title for page in pages.PAGES}) == len(pages.PAGES)
    assert len({page.url_path for page in pages.PAGES}) == len(pages.PAGES)
    assert not set(pages.PAGE_KEYS) & set(filters.FILTER_KEYS + filters.STREAMLIT_KEYS)


@pytest.mark.parametrize("page", pages.PAGES, ids=lambda page: page.url_path)
def test_a_view_uses_exactly_the_url_keys_its_page_declares(page):
    used = url_keys_used((DASHBOARD / page.view).read_text())
    assert used == set(page.url_keys), (
        f"{page.view} uses URL keys {sorted(used)}; its page in dashboard/pages.py declares "
        f"{sorted(page.url_keys)}"
    )


def test_the_key_scan_finds_each_way_of_reading_the_url():
    source = """
import streamlit as st
from dashboard import filters, ui
params = st.query_params.to_dict()
a = filters.parse_int(params, "alpha", 1, 9, [])
b = filters.parse_choice(params, "beta", ["x"], [])
c = ui.page_url_int("gamma", 1, 9)
d = st.query_params.get("delta")
st.query_params["epsilon"] = "1"
e = params["zeta"]
f = other["not_a_url_key"]
"""
    assert url_keys_used(source) == {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}
