"""Dashboard entry: `streamlit run dashboard/app.py -- --db FILE` (or TIMELAPSE_DB=FILE).

Runs on every interaction: the optional password gate, the store check, the shared sidebar
filters (read from the URL once per session, written back on every run so a copied link
reopens the same view), then the chosen page from `st.navigation`. Store problems become a
notice, never a traceback: while the pipeline holds the write lock the page says so and retries.
"""

from __future__ import annotations

import hmac
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

import store  # noqa: E402
from dashboard import charts, data, filters, metrics, pages, ui  # noqa: E402
from store.facts import THRESHOLD_KINDS  # noqa: E402

st.set_page_config(
    page_title="Time-lapse outliers",
    page_icon=":material/park:",
    layout="wide",
    initial_sidebar_state="expanded",
)


def _password() -> str | None:
    """The shared password from st.secrets (`password = "..."`), or None when unset."""
    try:
        value = st.secrets.get("password")
    except Exception:  # no secrets.toml at all: Streamlit raises its own not-found error
        return None
    return str(value) if value else None


def _gate() -> None:
    """Stop here until the visitor has typed the password (when one is configured).
    Only the session's own state unlocks it; no URL parameter is consulted."""
    secret = _password()
    if secret is None or st.session_state.get("_authed") is True:
        return
    st.title("Time-lapse outliers")
    with st.form("login"):
        typed = st.text_input("Password", type="password")
        ok = st.form_submit_button("Enter")
    if ok:
        if hmac.compare_digest(typed.encode(), secret.encode()):
            st.session_state["_authed"] = True
            st.rerun()
        st.error("Wrong password.")
    st.stop()


def _store_path() -> Path:
    db = data.db_path()
    if db is None:
        st.error(
            "No store given. Start the dashboard with "
            "`streamlit run dashboard/app.py -- --db FILE` or set TIMELAPSE_DB=FILE; "
            "make a store with `python -m pipeline demo` or `python -m pipeline run FOLDER "
            "--db FILE`."
        )
        st.stop()
    if not db.is_file():
        st.error(
            f"No store at {db}: create it with `python -m pipeline ingest FOLDER --db {db}` "
            "or `python -m pipeline demo`."
        )
        st.stop()
    st.session_state["_db_path"] = str(db)
    return db


def _sanitise_widgets(opts: dict) -> None:
    """Drop widget values the store no longer offers (e.g. after switching runs). Switching
    runs sets the junk causes to the new run's own (its `--junk-causes`): a choice made for
    one run is not carried to another; a shared link's choice holds on the first load."""
    state = st.session_state
    run_id = state.get(filters.W_RUN)
    if state.get("_causes_run", run_id) != run_id and opts["causes"]:
        state[filters.W_CAUSES] = list(opts["junk_causes"])
    state["_causes_run"] = run_id
    for key, known in (
        (filters.W_DAYLIGHT, opts["daylight"]),
        (filters.W_WEATHER, opts["conditions"]),
        (filters.W_CLUSTER, opts["clusters"]),
    ):
        if key in state:
            state[key] = [v for v in state[key] if v in known]
    if filters.W_CAUSES in state:
        state[filters.W_CAUSES] = [c for c in state[filters.W_CAUSES] if c in opts["causes"]]
    if filters.W_DET in state and state[filters.W_DET] not in opts["detectors"]:
        state[filters.W_DET] = opts["detectors"][0] if opts["detectors"] else None
    lo, hi = opts["date_min"], opts["date_max"]
    dates = state.get(filters.W_DATES)
    if lo is None:
        state.pop(filters.W_DATES, None)
    elif isinstance(dates, (list, tuple)) and dates:
        start = min(max(dates[0], lo), hi)
        end = min(max(dates[-1], lo), hi)
        state[filters.W_DATES] = (start, max(start, end))


def _sidebar(opts: dict) -> None:
    st.sidebar.header("Filters")
    sb = st.sidebar
    if len(opts["runs"]) > 1:
        sb.selectbox(
            "Analysis run",
            opts["runs"],
            key=filters.W_RUN,
            format_func=lambda r: f"run {r}" + (" (latest)" if r == opts["runs"][0] else ""),
            help="Clusters, map and scores come from this run.",
        )
    if opts["date_min"] is not None:
        sb.date_input(
            "Dates (camera clock)",
            key=filters.W_DATES,
            min_value=opts["date_min"],
            max_value=opts["date_max"],
            format="YYYY-MM-DD",
        )
    sb.slider(
        "Hours of day",
        0,
        23,
        key=filters.W_HOURS,
        help="Camera-clock hours, both ends included (6-18 = 06:00 to 18:59).",
    )
    sb.multiselect(
        "Daylight",
        opts["daylight"],
        key=filters.W_DAYLIGHT,
        placeholder="any",
        help="From the sun's elevation (or brightness).",
    )
    sb.multiselect(
        "Weather",
        opts["conditions"],
        key=filters.W_WEATHER,
        placeholder="any",
        help="Condition of the nearest earlier hourly observation.",
    )
    sb.multiselect(
        "Cluster",
        opts["clusters"],
        key=filters.W_CLUSTER,
        placeholder="any",
        format_func=charts.cluster_label,
    )
    if opts["detectors"]:
        sb.selectbox(
            "Detector",
            opts["detectors"],
            key=filters.W_DET,
            help="Ranks the gallery and sets the threshold below. "
            "Scores: higher = more abnormal. `cause:...` is one cause of junk's "
            "score; `consensus` sums the junk causes the run counts; `learned` (once you "
            "have reviewed frames and analysed again) is the consensus re-weighed by your "
            "reviews.",
        )
        if opts["causes"]:
            own = ", ".join(opts["junk_causes"])
            sb.multiselect(
                "Junk causes",
                opts["causes"],
                key=filters.W_CAUSES,
                placeholder=f"the run's own: {own}",
                help="What the consensus counts as junk on every page and in the export: "
                "quality (blur, fog, water or dirt on the lens, too dark or bright), "
                "camera (moved, knocked), scene (something in front or new), rarity "
                f"(unlike its neighbours). This run counts {own} (`analyze --junk-causes`); "
                "another choice sums those causes' stored scores again (the first page with it "
                "takes a few seconds on a large archive).",
            )
            counted = st.session_state.get(filters.W_CAUSES) or opts["junk_causes"]
            at_odds = opts.get("causes_at_odds", {})
            advice = causes_advice(at_odds, counted)
            if advice:
                sb.caption(advice)
                _see_what_it_counts(sb, [c for c in at_odds if c in counted], opts)
            left_out = left_out_note(opts.get("causes_left_out", {}), counted)
            if left_out:
                sb.caption(left_out)
            _suggested_causes(sb, opts, counted)
        _learned(sb, opts, st.session_state.get(filters.W_CAUSES) or opts.get("junk_causes"))
        kind = sb.selectbox(
            "Threshold",
            THRESHOLD_KINDS,
            key=filters.W_THR_KIND,
            format_func=filters.THRESHOLD_LABELS.get,
        )
        if kind == "pct":
            sb.slider("Percentile at least (%)", 0.0, 100.0, step=0.5, key=filters.W_THR_PCT)
        elif kind == "topk":
            sb.number_input(
                "k (frames)", min_value=1, max_value=10_000_000, step=10, key=filters.W_THR_K
            )
    else:
        sb.caption("No analysis run yet: run `python -m pipeline analyze` for clusters and scores.")
    n_sel = len(ui.selection())
    if n_sel:
        sb.caption(f"{filters.plural(n_sel, 'frame')} selected (map / gallery).")
        if sb.button("Clear selection", key="clear_selection"):
            ui.set_selection([])
            st.rerun()


def _see_what_it_counts(sb, causes: list[str], opts: dict) -> None:
    """Under the advice on a cause at odds with the quality cause: a button per cause that
    opens the Gallery ranked by that cause's score, so the owner sees what it counts as junk
    (a sea-and-sky camera's clear days and boats, or a garden's visitors) before leaving it
    out."""
    for cause in causes:
        key = f"cause:{cause}"
        if key not in opts["detectors"]:
            continue
        if sb.button(
            f"See what {cause} counts as junk",
            key=f"see_{cause}",
            icon=":material/photo_library:",
            help=f"Opens the Gallery ranked by the {cause} cause's score ({key}): the frames "
            "it counts as junk first.",
        ):
            ui.request_filter(**{filters.W_DET: key})
            st.switch_page(pages.view("Gallery"))


def _suggested_causes(sb, opts: dict, counted: list[str]) -> None:
    """Under "Junk causes": the causes the user's reviews of the filtered frames rank better
    than those `counted` now (`metrics.suggest_causes`), with a button that counts them; nothing
    until at least `metrics.MIN_EACH` frames of each verdict are reviewed, or while the reviews
    agree with the causes counted."""
    counts = data.get("review_counts")
    if min(counts["junk"], counts["keep"]) < metrics.MIN_EACH:
        return
    stored = list(opts["causes"])
    counted = list(counted or stored)
    flt = filters.from_widgets(st.session_state, opts).replace(junk_causes=(), threshold_kind="all")
    suggestion = _suggestion(data.get("reviewed_cause_scores", flt, stored), counted, stored)
    if suggestion is None or not suggestion.changed:
        return
    names = ", ".join(suggestion.causes)
    sb.caption(
        f"Your reviews of these frames ({suggestion.n_junk} junk, {suggestion.n_keep} keep) "
        f"rank better counting **{names}** ({'; '.join(suggestion.steps)}): ROC-AUC "
        f"{suggestion.auc:.2f} over them, against {suggestion.auc_now:.2f} with the causes "
        "counted now."
    )
    if sb.button(
        f"Count {names}",
        key="suggested_causes",
        icon=":material/rule:",
        help="Counts them on every page, in the export and in the link. To make them the "
        f"run's own: `python -m pipeline analyze --junk-causes {','.join(suggestion.causes)}`.",
    ):
        ui.request_filter(**{filters.W_CAUSES: list(suggestion.causes)})
        st.rerun()


def _learned(sb, opts: dict, counted) -> None:
    """Under the detector: what the run's `learned` learned from the user's reviews, with a
    button that ranks by it; or, once there are enough reviews for it, how to get it."""
    note = learned_note(
        opts.get("learned"),
        data.get("review_counts"),
        opts.get("learns", True),
        opts.get("learn_min_reviews", 5),
        Path(st.session_state.get("_db_path", "garden.duckdb")).name,
        other_causes=[] if set(counted or ()) == set(opts.get("junk_causes") or ()) else counted,
        own_causes=opts.get("junk_causes") or [],
    )
    if note is None:
        return
    sb.caption(note)
    if opts.get("learned") and st.session_state.get(filters.W_DET) != "learned":
        if sb.button(
            "Rank by learned",
            key="rank_by_learned",
            icon=":material/school:",
            help="Ranks the gallery and sets the threshold by the consensus re-weighed by your "
            "reviews (detector learned).",
        ):
            ui.request_filter(**{filters.W_DET: "learned"})
            st.rerun()


def learned_note(
    learned: dict | None,
    counts: dict[str, int],
    learns: bool,
    least: int,
    db_name: str,
    other_causes=(),
    own_causes=(),
) -> str | None:
    """What the sidebar says of learning from reviews: what the run's `learned` learned (and
    whether the reviews have changed since, and that it re-weighs the run's own junk causes
    when `other_causes` are chosen), or how to learn from reviews enough for it; None when
    there is nothing to say."""
    again = f"`python -m pipeline analyze --db {db_name}`"
    if learned:
        n_junk, n_keep = learned["n_junk"], learned["n_keep"]
        check = learned.get("cross_validated") or {}
        text = (
            f"**learned** ranks by your reviews as this run learned them ({n_junk} junk, "
            f"{n_keep} keep): "
        )
        if not learned.get("model_weight"):
            text += "they agree with the consensus, so it ranks the frames as the consensus does."
        else:
            text += (
                f"a model of them counts {learned['model_weight']:.0%} against the consensus. "
                f"Ranked by models fitted without them, the reviews' ROC-AUC is "
                f"{check.get('roc_auc', float('nan')):.2f} (the consensus alone: "
                f"{check.get('roc_auc_consensus', float('nan')):.2f})."
            )
        if (counts["junk"], counts["keep"]) != (n_junk, n_keep):
            text += (
                f" You have {counts['junk']} junk and {counts['keep']} keep reviews now: "
                f"{again} learns from them all."
            )
        if other_causes:
            text += (
                f" It re-weighs the run's own junk causes ({', '.join(own_causes)}), not "
                f"the ones chosen above: `python -m pipeline analyze --db {db_name} "
                f"--junk-causes {','.join(other_causes)}` learns on those."
            )
        return text
    if not learns or not counts["junk"] + counts["keep"]:
        return None
    if min(counts["junk"], counts["keep"]) >= least:
        return (
            f"You have reviewed {counts['junk']} frames junk and {counts['keep']} keep: "
            f"{again} learns from them (detector **learned**: the consensus re-weighed by "
            "your reviews)."
        )
    fewer = "keep" if counts["keep"] < least else "junk"
    where = (
        "good frames from the bottom of the Gallery (order: lowest score first)"
        if fewer == "keep"
        else "junk frames from the top of the Gallery"
    )
    return (
        f"You have reviewed {counts['junk']} frames junk and {counts['keep']} keep. To learn "
        f"what junk is on this camera, analysis needs at least {least} of each: mark some "
        f"{where} {fewer} too, or review one by one in the order *to teach learned* (Review "
        "& export), which offers the highest-ranked frame and one drawn at random in turn."
    )


@st.cache_data(show_spinner=False, max_entries=64)
def _suggestion(reviewed, counted: list[str], stored: list[str]):
    """`metrics.suggest_causes`, once per set of reviews and choice (it resamples them)."""
    return metrics.suggest_causes(reviewed, counted, stored)


def causes_advice(at_odds: dict[str, float], counted) -> str | None:
    """What the sidebar says when a counted cause ranks this camera's frames against the
    quality cause (`analyze` records them: the run's `causes_at_odds`), else None."""
    odd = {c: r for c, r in at_odds.items() if c in counted}
    if not odd:
        return None
    names = " and ".join(f"**{c}** (Spearman {r:+.2f})" for c, r in odd.items())
    one = len(odd) == 1
    return (
        f"On this camera the {names} cause{'' if one else 's'} rank{'s' if one else ''} "
        "frames against the quality cause: what "
        f"{'it counts' if one else 'they count'} as junk, the quality cause calls good "
        "frames. If what changes in this view (boats, clouds, traffic, diggers) is not junk "
        f"to you, leave {'it' if one else 'them'} out of the junk causes."
    )


def left_out_note(left_out: dict[str, float], counted) -> str | None:
    """What the sidebar says of a cause the run left out by itself (`analyze` with junk causes
    unset: a scene cause that mostly says what kind of day it is) while it is not counted."""
    out = {c: share for c, share in left_out.items() if c not in counted}
    if not out:
        return None
    names = " and ".join(f"**{c}**" for c in out)
    shares = ", ".join(f"{share:.0%}" for share in out.values())
    return (
        f"The run left the {names} cause out: on this camera it mostly says what kind of day it "
        f"is (clear or grey, the sun, the traffic), not what is in a frame ({shares} of its "
        "ranking of the daylight frames lies between days). Add it above to count it."
    )


def _sync_url(url: dict[str, str], page_title: str) -> None:
    """Write the filter into the URL; keep only the URL keys the current page owns."""
    params = st.query_params
    owned = pages.page(page_title).url_keys
    for key in list(params.keys()):  # unknown keys were reported once; don't carry them on
        if key not in (*filters.FILTER_KEYS, *pages.PAGE_KEYS, *filters.STREAMLIT_KEYS):
            del params[key]
    for key in pages.PAGE_KEYS:
        if key not in owned and key in params:
            del params[key]
    for key in filters.FILTER_KEYS:
        if key in url:
            if params.get(key) != url[key]:
                params[key] = url[key]
        elif key in params:
            del params[key]
    st.session_state["_url"] = url


def _filters(page_title: str) -> None:
    """Resolve the shared filter: URL on a session's first run, then the sidebar widgets."""
    state = st.session_state
    base = data.get("options", None)
    notices: list[str] = []
    if not state.get("_url_loaded"):
        flt, notices = filters.parse(st.query_params.to_dict(), base)
        opts = (
            data.get("options", flt.run_id) if flt.run_id != (base["runs"] or [None])[0] else base
        )
        if opts is not base:
            flt, notices = filters.parse(st.query_params.to_dict(), opts)
        for key, value in filters.to_widgets(flt, opts).items():
            state[key] = value
        state["_url_loaded"] = True
        state["_url_notices"] = notices
    pending = state.pop("_pending", None)
    if pending:
        for key, value in pending.items():
            state[key] = value
    run_id = state.get(filters.W_RUN)
    opts = base if run_id in (None, (base["runs"] or [None])[0]) else data.get("options", run_id)
    _sanitise_widgets(opts)
    _sidebar(opts)
    flt = filters.from_widgets(state, opts)
    state["_flt"], state["_opts"] = flt, opts
    _sync_url(filters.serialise(flt, opts), page_title)


def _locked(exc: store.StoreLockedError) -> None:
    st.warning(
        f"{exc}\n\nThe dashboard retries by itself every few seconds.", icon=":material/lock_clock:"
    )

    @st.fragment(run_every=5)
    def _retry() -> None:
        try:
            data.Reader(data.current_db(), 0.2).call("latest_run_id")
        except store.StoreLockedError:
            st.caption("Still locked; retrying...")
            return
        st.rerun(scope="app")

    _retry()
    if st.button("Retry now"):
        st.rerun()


def main() -> None:
    ui.layout_css()
    _gate()
    db = _store_path()
    page = st.navigation(
        [
            st.Page(p.view, title=p.title, url_path=p.url_path, default=p is pages.DEFAULT)
            for p in pages.PAGES
        ]
    )
    try:
        _filters(page.title)
        ui.notices(st.session_state.get("_url_notices", []))
        st.sidebar.caption(f"Store: {db.name}")
        page.run()
    except store.StoreLockedError as exc:
        _locked(exc)
    except store.StoreError as exc:
        st.error(str(exc), icon=":material/error:")


main()
