"""Pure chart functions: DataFrame in, Plotly Figure out (no Streamlit, no store).

One colour per detector, per cluster and per incident cause everywhere (`detector_color`,
`cluster_color`, `cause_color`). The archive mosaic is drawn as one image (`mosaic`). Figures
leave backgrounds and fonts to the Streamlit theme (`st.plotly_chart(theme="streamlit")`), so
they read in light and dark mode; colours are chosen to work on both. Scores: higher = more
abnormal; percentiles are 0..1 ranks shown as 0-100 %.
"""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from dashboard import metrics

# Fixed detector colours (Okabe-Ito / Tableau hues readable on white and on near-black).
_DETECTOR_COLORS = {
    "consensus": "#E45756",
    "iforest": "#4C78A8",
    "lof": "#F58518",
    "regions": "#B6992D",
    "knn": "#54A24B",
    "ecod": "#B279A2",
    "copod": "#9D755D",
    "hbos": "#EECA3B",
    "temporal": "#72B7B2",
    "same_time": "#FF9DA6",
    "dark": "#8C8C8C",
    "overexposed": "#F2CF5B",
    "blurry": "#79706E",
    "low_information": "#BAB0AC",
    "haze": "#9ECAE9",
    "background": "#17BECF",
    "soft": "#8E6CC2",
    "flat": "#BCBD22",
    "exposure": "#FFBE7D",
    "alignment": "#D37295",
    "cause:quality": "#00A087",
    "cause:camera": "#E7298A",
    "cause:scene": "#A6761D",
    "cause:rarity": "#5E6AD2",
}
_EXTRA = ["#BCBD22", "#AF7AA1", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD"]
_CLUSTER_PALETTE = [
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#EECA3B",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
    "#79C36A",
    "#D37295",
    "#59A14F",
    "#EDC948",
    "#AF7AA1",
    "#76B7B2",
    "#FF9D9A",
]
NOISE_COLOR = "#9A9A9A"
DAYLIGHT_COLORS = {"day": "#F2B701", "twilight": "#E17C05", "night": "#3B4B8C"}
CONDITION_COLORS = {
    "clear": "#F2B701",
    "cloudy": "#8C9BAB",
    "rain": "#3D7DCA",
    "snow": "#A8D8F0",
    "fog": "#B7A99A",
    "drizzle": "#6FA8DC",
    "storm": "#6A3D9A",
    "unknown": "#C9C9C9",
}
SCORE_SCALE = "Viridis"
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(title=None))

# Compare detectors draws its charts from at most this many filtered frames (a fixed
# pseudo-random sample above it): 10,000 keeps a 100k-frame store's page under 300 ms p95
# (20,000 measured 332 ms) while the rank scatter and statistics stay steady.
COMPARE_MAX_FRAMES = 10_000


def _fig(
    traces: list[dict], title: str, xaxis: dict | None = None, yaxis: dict | None = None, **layout
) -> go.Figure:
    """A figure built in one constructor call from plain dicts: Plotly validates it once,
    where `add_trace` / `update_layout` calls each copy and re-validate (4x slower for a
    four-trace chart). Axis titles are given as `xaxis={"title": "..."}`."""
    lay = {"title": {"text": title}, **_LAYOUT, **layout}
    for name, axis in (("xaxis", xaxis), ("yaxis", yaxis)):
        if axis:
            axis = dict(axis)
            if isinstance(axis.get("title"), str):
                axis["title"] = {"text": axis["title"]}
            lay[name] = axis
    return go.Figure({"data": traces, "layout": lay})


def detector_color(detector: str) -> str:
    """The detector's colour, the same on every chart."""
    if detector in _DETECTOR_COLORS:
        return _DETECTOR_COLORS[detector]
    digest = int(hashlib.blake2b(detector.encode(), digest_size=2).hexdigest(), 16)
    return _EXTRA[digest % len(_EXTRA)]


def cluster_color(cluster: int | None) -> str:
    """The cluster's colour, the same on every chart (noise, -1, is grey)."""
    if cluster is None or pd.isna(cluster) or int(cluster) < 0:
        return NOISE_COLOR
    return _CLUSTER_PALETTE[int(cluster) % len(_CLUSTER_PALETTE)]


def cluster_label(cluster: int | None) -> str:
    if cluster is None or pd.isna(cluster):
        return "no cluster"
    return "noise" if int(cluster) < 0 else f"cluster {int(cluster)}"


def _empty(title: str, message: str = "No frames match the filters") -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        xaxis_visible=False,
        yaxis_visible=False,
        annotations=[dict(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")],
        **_LAYOUT,
    )
    return fig


def _faint(color: str, alpha: float = 0.3) -> str:
    """A `#RRGGBB` colour as rgba with `alpha` (the same hue, lighter on either theme)."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# The parts of a detector's bar in `outliers_bar` (trace names).
BAR_SHARED, BAR_OWN, BAR_UNKNOWN = "consensus flags too", "only this detector", "not in the sample"


def outliers_bar(
    df: pd.DataFrame, agreement: pd.DataFrame | None = None, sampled: bool = False
) -> go.Figure:
    """Frames flagged per detector (a bar per detector, its own colour).

    With `agreement` (`metrics.consensus_agreement` on the filtered frames, or on a sample of
    them when `sampled`), each bar is split: solid, the flags the consensus shares; hatched
    and faint, in the same colour, those only this detector raises. Each detector flags its
    own top share of the run, so on an unfiltered view the bars are equal and the split is
    what tells them apart. The split scales the sample's share to the bar's count; a detector
    with no flag in the sample is drawn faint without hatching (`BAR_UNKNOWN`)."""
    title = "Frames flagged per detector"
    if df.empty:
        return _empty(title, "No analysis run yet")
    dets = list(df["detector"])
    colors = [detector_color(d) for d in dets]
    n_flagged = df["n_flagged"].to_numpy(dtype=float)
    of_scored = np.c_[df["flagged_share"].to_numpy(dtype=float) * 100, df["n_scored"].to_numpy()]
    if agreement is None or agreement.empty:
        return _fig(
            [
                dict(
                    type="bar",
                    x=dets,
                    y=n_flagged,
                    marker=dict(color=colors),
                    customdata=of_scored,
                    hovertemplate="%{x}: %{y:,} frames flagged (%{customdata[0]:.1f} % of "
                    "%{customdata[1]:,})<extra></extra>",
                )
            ],
            title,
            xaxis={"title": "detector"},
            yaxis={"title": "frames flagged"},
        )
    share = agreement.set_index("detector")["shared_share"].reindex(dets).to_numpy(dtype=float)
    known = ~np.isnan(share)
    shared = np.where(known, np.round(n_flagged * np.nan_to_num(share)), 0.0)
    own = np.where(known, n_flagged - shared, 0.0)
    about = "about " if sampled else ""
    custom = np.c_[of_scored, n_flagged, np.nan_to_num(share) * 100]
    head = "%{x}: %{customdata[2]:,} frames flagged (%{customdata[0]:.1f} % of %{customdata[1]:,})"
    traces = [
        dict(
            type="bar",
            name=BAR_SHARED,
            x=dets,
            y=shared,
            marker=dict(color=colors, line=dict(color=colors, width=1)),
            customdata=custom,
            hovertemplate=head + f"<br>{about}%{{y:,}} (%{{customdata[3]:.0f}} %) "
            "flagged by the consensus too<extra></extra>",
        ),
        dict(
            type="bar",
            name=BAR_OWN,
            x=dets,
            y=own,
            marker=dict(
                color=[_faint(c) for c in colors],
                line=dict(color=colors, width=1),
                pattern=dict(shape="/", fgcolor=colors, size=6, solidity=0.35),
            ),
            customdata=custom,
            hovertemplate=head + f"<br>{about}%{{y:,}} flagged by this detector only, "
            "not by the consensus<extra></extra>",
        ),
    ]
    if not known.all():
        traces.append(
            dict(
                type="bar",
                name=BAR_UNKNOWN,
                x=dets,
                y=np.where(known, 0.0, n_flagged),
                marker=dict(color=[_faint(c) for c in colors], line=dict(color=colors, width=1)),
                customdata=custom,
                hovertemplate=head + "<br>how many the consensus shares: none of them is in "
                "the sample<extra></extra>",
            )
        )
    return _fig(
        traces,
        title,
        xaxis={"title": "detector"},
        yaxis={"title": "frames flagged"},
        barmode="stack",
        showlegend=False,
    )


CELL_TRACE = "cells"  # the calendar heatmap's clickable markers, one per cell


def period_label(day, unit: str = "day") -> str:
    """How the calendar names a period starting on `day` ('day', 'week' or 'month')."""
    stamp = pd.Timestamp(day)
    if unit == "week":
        return stamp.strftime("week of %a %d %b %Y")
    if unit == "month":
        return stamp.strftime("%b %Y")
    return stamp.strftime("%a %d %b %Y")


def calendar_heatmap(df: pd.DataFrame, value: str = "n_frames") -> go.Figure:
    """Period x hour-of-day heatmap of frame count (`n_frames`) or outlier rate
    (`outlier_rate`); a row per day, or per week or month for long spans (`period`).

    The colours start at 0 (a uniform archive, one frame every hour, reads as one colour on a
    0-1 scale, not as the middle of 0.6-1.4). A heatmap cannot be selected in Plotly, so a
    click on a cell would send no selection event: each cell also holds an invisible marker
    (scatter traces named `CELL_TRACE`: the cells with frames, `customdata` their value, then
    the empty ones) whose click is the event, with the cell's period label as `y` and its hour
    as `x`; the hover text is the marker's."""
    title = "Frames per hour" if value == "n_frames" else "Share of frames flagged per hour"
    if df.empty:
        return _empty(title)
    unit = str(df["period"].iloc[0]) if "period" in df else "day"
    if unit != "day":
        title += f" (a row per {unit})"
    # Day x hour grid by array indexing (no pivot_table): one row per day, NaN where no frames.
    days, day_idx = np.unique(
        pd.to_datetime(df["day"]).to_numpy(dtype="datetime64[D]"), return_inverse=True
    )
    z = np.full((len(days), 24), np.nan)
    hours = df["hour"].to_numpy(dtype=int)
    ok = (hours >= 0) & (hours < 24)
    z[day_idx[ok], hours[ok]] = df[value].to_numpy(dtype=float)[ok]
    if value == "outlier_rate":
        z = z * 100
    labels = [period_label(d, unit) for d in days]
    top = float(np.nanmax(z)) if np.isfinite(z).any() else 0.0
    colorbar: dict = {"title": {"text": "frames" if value == "n_frames" else "% flagged"}}
    if value == "n_frames" and top <= 10:
        colorbar["dtick"] = 1  # whole frames, not 0.2-frame ticks
    # One marker per cell, empty cells too (a click there finds its own cell, not a
    # neighbour): the cells with frames carry their value, the empty ones a fixed hover. No
    # per-point text: 400 rows are 9,600 markers, whose numbers travel as binary arrays.
    rows, cols = np.divmod(np.arange(z.size), 24)
    flat = z.ravel()
    filled = ~np.isnan(flat)
    names = np.array(labels)  # fixed-width strings: copied in one go
    what = "%{customdata:,.0f} frames" if value == "n_frames" else "%{customdata:.1f} % flagged"
    hidden = {"marker": {"opacity": 0}}
    cells = [
        dict(
            type="scatter",
            name=CELL_TRACE,
            x=cols[mask],
            y=names[rows[mask]],
            customdata=flat[mask] if has else None,
            mode="markers",
            marker={"symbol": "square", "size": 16, "opacity": 0},
            selected=hidden,
            unselected=hidden,
            hovertemplate="%{y} %{x}:00 — " + (what if has else "no frames") + "<extra></extra>",
            showlegend=False,
        )
        for has, mask in ((True, filled), (False, ~filled))
        if mask.any()
    ]
    return _fig(
        [
            dict(
                type="heatmap",
                z=z,
                x=list(range(24)),
                y=labels,
                colorscale="Blues" if value == "n_frames" else "Reds",
                zmin=0,
                zmax=max(top, 1.0),
                colorbar=colorbar,
                hoverinfo="skip",
                xgap=1,
                ygap=1,
            ),
            *cells,
        ],
        title,
        xaxis={"title": "hour of day (camera clock)", "dtick": 2, "range": [-0.5, 23.5]},
        # the markers would pad an automatic range: fixed to the cells, first period on top
        yaxis={"type": "category", "range": [len(labels) - 0.5, -0.5]},
        # a click anywhere in a cell reaches its marker (cells up to ~100 pixels wide)
        hoverdistance=60,
        height=max(260, min(900, 22 * len(labels) + 120)),
    )


def timeline(df: pd.DataFrame) -> go.Figure:
    """Frames per time bucket, split into flagged and not flagged (stacked bars)."""
    title = "Timeline"
    if df.empty:
        return _empty(title)
    unit = str(df["bucket_label"].iloc[0])
    normal = (df["n_frames"] - df["n_flagged"]).to_numpy()
    x = df["bucket"].to_numpy()
    return _fig(
        [
            dict(type="bar", x=x, y=normal, name="not flagged", marker=dict(color="#4C78A8")),
            dict(
                type="bar",
                x=x,
                y=df["n_flagged"].to_numpy(),
                name="flagged",
                marker=dict(color="#E45756"),
            ),
        ],
        f"{title} (frames per {unit})",
        xaxis={"title": "time (camera clock)"},
        yaxis={"title": f"frames per {unit}"},
        barmode="stack",
        bargap=0.05,
    )


COLOR_BY = ("cluster", "score", "daylight", "condition")


def _minute_strings(values: pd.Series) -> np.ndarray:
    """Timestamps as 'YYYY-MM-DD HH:MM' in a fixed-width numpy string array ('' when NaT),
    formatted in one vectorised call instead of one strftime per point."""
    stamps = pd.to_datetime(values).to_numpy(dtype="datetime64[m]")
    text = np.datetime_as_string(stamps, unit="m")
    text = np.char.replace(text, "T", " ")
    return np.where(np.isnat(stamps), "", text)


def map_scatter(
    df: pd.DataFrame, color_by: str = "cluster", detector: str = "consensus"
) -> go.Figure:
    """The 2-D embedding map as a WebGL scatter; `customdata[0]` is the frame id."""
    title = "Embedding map"
    if df.empty:
        return _empty(title, "No map coordinates for these frames (run `analyze`)")
    traces: list[dict] = []
    size = 8 if len(df) < 2_000 else (5 if len(df) < 20_000 else 3)
    hover = (
        "frame %{customdata[0]}<br>%{text}<br>score percentile "
        "%{customdata[1]:.1f} %<extra>%{fullData.name}</extra>"
    )
    # Numeric customdata (frame id, percentile) and a fixed-width string array for the time:
    # Plotly copies every trace's arrays, and an object array is copied element by element
    # (20,000 points: 100 ms), a numeric or fixed-width one in one go.
    when_all = _minute_strings(df["taken_at"])

    def custom(part: pd.DataFrame) -> np.ndarray:
        return np.c_[
            part["frame_id"].to_numpy(dtype=float),
            part["score_pct"].to_numpy(dtype=float, na_value=0.0) * 100,
        ]

    if color_by == "score":
        traces.append(
            dict(
                type="scattergl",
                x=df["map_x"].to_numpy(dtype=float),
                y=df["map_y"].to_numpy(dtype=float),
                mode="markers",
                name=f"{detector} percentile",
                customdata=custom(df),
                text=when_all,
                hovertemplate=hover,
                marker=dict(
                    size=size,
                    color=df["score_pct"].to_numpy(dtype=float, na_value=0) * 100,
                    colorscale=SCORE_SCALE,
                    cmin=0,
                    cmax=100,
                    colorbar=dict(title=dict(text=f"{detector}<br>percentile %")),
                ),
            )
        )
    else:
        column = {"cluster": "cluster", "daylight": "daylight", "condition": "condition"}[color_by]
        for key, rows in df.groupby(column, dropna=False, sort=True).indices.items():
            part = df.iloc[rows]
            if color_by == "cluster":
                name, color = cluster_label(key), cluster_color(key)
            elif color_by == "daylight":
                name, color = str(key), DAYLIGHT_COLORS.get(str(key), NOISE_COLOR)
            else:
                name, color = str(key), CONDITION_COLORS.get(str(key), NOISE_COLOR)
            traces.append(
                dict(
                    type="scattergl",
                    x=part["map_x"].to_numpy(dtype=float),
                    y=part["map_y"].to_numpy(dtype=float),
                    mode="markers",
                    name=name,
                    customdata=custom(part),
                    text=when_all[rows],
                    hovertemplate=hover,
                    marker=dict(size=size, color=color, opacity=0.8),
                )
            )
    return _fig(
        traces,
        title,
        xaxis={"title": "map x"},
        yaxis={"title": "map y"},
        # the legend names the colours even when every point has one (all 'unknown' weather)
        showlegend=color_by != "score",
        dragmode="lasso",
        height=560,
    )


def custom_value(point: dict, i: int = 0) -> float | None:
    """Item `i` of a selected point's customdata, as Streamlit's selection event
    (`st.plotly_chart(on_select=...)`) gives it, None when it has none. The event is the
    browser's Plotly point serialised as JSON: a chart's numpy customdata travels as a typed
    array, so a row of a 2-D one arrives as a dict keyed "0", "1", ... (a typed array in
    JSON), a plain list's row as a list, and an item of a 1-D array as a scalar."""
    custom = point.get("customdata")
    if isinstance(custom, dict):
        custom = custom.get(str(i), custom.get(i))
    elif isinstance(custom, (list, tuple)):
        custom = custom[i] if len(custom) > i else None
    elif i:
        custom = None
    try:
        return None if custom is None else float(custom)
    except (TypeError, ValueError):
        return None


def selected_frame_ids(points: list[dict]) -> list[int]:
    """The frame ids of a selection event's points on a chart whose `customdata[0]` is the
    frame id (`map_scatter`): the id travels with the point, so it names the same frame
    whatever the trace (one per colour) and its order; points without one are left out."""
    ids = (custom_value(p) for p in points)
    return [int(v) for v in ids if v is not None and v == v]


def cluster_sizes(df: pd.DataFrame) -> go.Figure:
    title = "Frames per cluster"
    if df.empty:
        return _empty(title, "No clusters (run `analyze`)")
    labels = [cluster_label(c) for c in df["cluster"]]
    return _fig(
        [
            dict(
                type="bar",
                x=labels,
                y=df["n_frames"].to_numpy(),
                marker=dict(color=[cluster_color(c) for c in df["cluster"]]),
                customdata=np.c_[
                    df["night_share"].to_numpy(dtype=float) * 100,
                    df["n_flagged"].to_numpy(dtype=float),
                ],
                hovertemplate="%{x}: %{y} frames, %{customdata[0]:.0f} % night, "
                "%{customdata[1]} flagged<extra></extra>",
            )
        ],
        title,
        xaxis={"title": "cluster"},
        yaxis={"title": "frames"},
    )


def cluster_profile(df: pd.DataFrame, kind: str = "hour") -> go.Figure:
    """Frames per hour of day (kind='hour', a line per cluster, hours without frames at 0) or
    per day (kind='day', stacked bars per cluster)."""
    title = "Hour-of-day profile" if kind == "hour" else "Date profile"
    if kind == "day" and "period" in df and len(df) and df["period"].iloc[0] != "day":
        title += f" (per {df['period'].iloc[0]})"
    part = df[df["kind"] == kind]
    if part.empty:
        return _empty(title)
    traces: list[dict] = []
    keys = part["key"].to_numpy()
    counts_all = part["n_frames"].to_numpy(dtype=float)
    for cluster, rows in part.groupby("cluster", sort=True).indices.items():
        name, color = cluster_label(cluster), cluster_color(cluster)
        if kind == "hour":
            counts = np.zeros(24)
            hours = keys[rows].astype(int)
            counts[hours] = counts_all[rows]
            traces.append(
                dict(
                    type="scatter",
                    x=list(range(24)),
                    y=counts,
                    name=name,
                    mode="lines+markers",
                    line=dict(color=color),
                )
            )
        else:
            traces.append(
                dict(
                    type="bar",
                    x=keys[rows].astype("datetime64[D]"),
                    y=counts_all[rows],
                    name=name,
                    marker=dict(color=color),
                )
            )
    xaxis = (
        {"title": "hour of day (camera clock)", "range": [-0.5, 23.5], "dtick": 2}
        if kind == "hour"
        else {"title": "day"}
    )
    return _fig(traces, title, xaxis=xaxis, yaxis={"title": "frames"}, barmode="stack")


def rank_scatter(wide: pd.DataFrame, a: str, b: str) -> go.Figure:
    """Each frame's percentile under detector A against detector B (WebGL), coloured by which
    of the two flags it (`metrics.flagged`)."""
    title = f"{a} vs {b}: score percentile"
    if wide.empty or a not in wide or b not in wide:
        return _empty(title)
    xa = wide[a].to_numpy(dtype=float, na_value=np.nan)
    xb = wide[b].to_numpy(dtype=float, na_value=np.nan)
    ids = wide["frame_id"].to_numpy(dtype=np.int64)
    flag_a, flag_b = metrics.flagged(wide, a), metrics.flagged(wide, b)
    groups = [
        ("neither flags it", ~flag_a & ~flag_b, "#9A9A9A"),
        (f"only {a} flags it", flag_a & ~flag_b, detector_color(a)),
        (f"only {b} flags it", ~flag_a & flag_b, detector_color(b)),
        (
            "both flag it",
            flag_a & flag_b,
            "#E45756" if "#E45756" not in (detector_color(a), detector_color(b)) else "#7F3C8D",
        ),
    ]
    traces = [
        dict(  # one colour per trace: per-point colours are slow
            type="scattergl",
            x=xa[mask] * 100,
            y=xb[mask] * 100,
            mode="markers",
            name=name,
            marker=dict(size=4, color=colour, opacity=0.7),
            customdata=ids[mask][:, None],
            hovertemplate=f"frame %{{customdata[0]}}<br>{a} %{{x:.1f}} %<br>{b} %{{y:.1f}} %"
            "<extra></extra>",
        )
        for name, mask, colour in groups
    ]
    return _fig(
        traces,
        title,
        xaxis={"title": f"{a} percentile (%)", "range": [0, 100.5]},
        yaxis={"title": f"{b} percentile (%)", "range": [0, 100.5]},
        height=480,
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, title=None),
    )


def _matrix(
    df: pd.DataFrame, title: str, zmin: float, zmax: float, fmt: str, scale: str
) -> go.Figure:
    z = df.to_numpy(dtype=float)
    return _fig(
        [
            dict(
                type="heatmap",
                z=z,
                x=list(df.columns),
                y=list(df.index),
                zmin=zmin,
                zmax=zmax,
                colorscale=scale,
                text=[[format(v, fmt) if np.isfinite(v) else "–" for v in row] for row in z],
                texttemplate="%{text}",
                hovertemplate="%{y} / %{x}: %{z:" + fmt + "}<extra></extra>",
            )
        ],
        title,
        yaxis={"autorange": "reversed"},
        height=420,
    )


def spearman_heatmap(wide: pd.DataFrame, detectors: list[str]) -> go.Figure:
    title = "Spearman rank correlation"
    if wide.empty or len(detectors) < 2:
        return _empty(title)
    return _matrix(metrics.spearman(wide, detectors), title, -1, 1, ".2f", "RdBu_r")


def overlap_heatmap(wide: pd.DataFrame, detectors: list[str], k: int) -> go.Figure:
    title = f"Top-{k} overlap (share of row's top-{k} also in column's)"
    if wide.empty or len(detectors) < 2:
        return _empty(title)
    return _matrix(metrics.top_k_overlap(wide, detectors, k), title, 0, 1, ".0%", "Blues")


def agreement_over_time(
    wide: pd.DataFrame, detectors: list[str], top_pct: float = 0.95
) -> go.Figure:
    period = metrics.agreement_period(wide["taken_at"]) if not wide.empty else "day"
    title = f"Agreement per {period} (each detector's own flags)"
    df = metrics.agreement_by_day(wide, detectors, top_pct, period)
    if df.empty:
        return _empty(title)
    day = df["day"].to_numpy()
    mode = "lines+markers" if len(df) <= 120 else "lines"
    return _fig(
        [
            dict(
                type="scatter",
                x=day,
                y=df["agreement"].to_numpy(dtype=float) * 100,
                mode=mode,
                name="all agree",
                line=dict(color="#4C78A8"),
            ),
            dict(
                type="scatter",
                x=day,
                y=df["any_flagged"].to_numpy(dtype=float) * 100,
                mode=mode,
                name="flagged by any",
                line=dict(color="#E45756", dash="dot"),
            ),
        ],
        title,
        xaxis={"title": period},
        yaxis={"title": "% of frames", "range": [0, 100.5]},
    )


def precision_at_k(
    wide: pd.DataFrame, labels: pd.DataFrame, detectors: list[str], k_max: int = 200
) -> go.Figure:
    title = "Precision@k against reviews / ground truth"
    df = metrics.precision_at_k(wide, labels, detectors, k_max)
    if df.empty:
        return _empty(title, "No labelled frames among the filtered ones")
    det = df["detector"].to_numpy()
    ks, prec = df["k"].to_numpy(), df["precision"].to_numpy(dtype=float) * 100
    traces = [
        dict(
            type="scatter",
            x=ks[det == d],
            y=prec[det == d],
            mode="lines",
            name=d,
            line=dict(color=detector_color(d)),
        )
        for d in detectors
    ]
    return _fig(
        traces,
        title,
        xaxis={"title": "k (frames, highest scores first)"},
        yaxis={"title": "precision (%)", "range": [0, 100.5]},
    )


def roc_curves(wide: pd.DataFrame, labels: pd.DataFrame, detectors: list[str]) -> go.Figure:
    title = "ROC against reviews / ground truth"
    df, aucs = metrics.roc(wide, labels, detectors)
    if df.empty:
        return _empty(title, "Needs labelled anomalies and normal frames")
    det = df["detector"].to_numpy()
    fpr, tpr = df["fpr"].to_numpy(dtype=float), df["tpr"].to_numpy(dtype=float)
    traces = []
    for d in detectors:
        x, y = _corners(fpr[det == d], tpr[det == d])
        traces.append(
            dict(
                type="scatter",
                x=x,
                y=y,
                mode="lines",
                name=f"{d} (AUC {aucs[d]:.2f})",
                line=dict(color=detector_color(d)),
            )
        )
    traces.append(
        dict(
            type="scatter",
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            line=dict(color="#9A9A9A", dash="dash"),
        )
    )
    return _fig(
        traces,
        title,
        xaxis={"title": "false positive rate"},
        yaxis={"title": "true positive rate"},
        height=440,
    )


ROC_MAX_POINTS = 2_000


def _corners(
    x: np.ndarray, y: np.ndarray, max_points: int = ROC_MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """A polyline without its interior collinear points (the same line drawn, far fewer
    points), then at most `max_points` evenly spaced ones (a curve over 20,000 labelled frames
    drawn 400 px wide; the AUC is computed from every point)."""
    if len(x) <= 2:
        return x, y
    dx1, dy1 = np.diff(x)[:-1], np.diff(y)[:-1]
    dx2, dy2 = np.diff(x)[1:], np.diff(y)[1:]
    bend = ~np.isclose(dx1 * dy2, dy1 * dx2, rtol=0.0, atol=1e-15)
    keep = np.r_[True, bend, True]
    x, y = x[keep], y[keep]
    if len(x) > max_points:
        idx = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y = x[idx], y[idx]
    return x, y


NOT_SCORED = "not scored"


def frame_scores(df: pd.DataFrame) -> go.Figure:
    """One frame's percentile under every detector (bar per detector). A detector that could
    not score the frame (no score stored: e.g. the alignment part on a frame too dark to
    line up) has no bar but the words "not scored" on its row, so it cannot pass for 0."""
    title = "Score percentile per detector"
    if df.empty:
        return _empty(title, "This frame has no scores in the chosen run")
    pct = df["score_pct"].to_numpy(dtype=float) * 100
    missing = [d for d, p in zip(df["detector"], pct) if np.isnan(p)]
    return _fig(
        [
            dict(
                type="bar",
                x=pct,
                y=list(df["detector"]),
                orientation="h",
                marker=dict(color=[detector_color(d) for d in df["detector"]]),
                hovertemplate="%{y}: %{x:.1f} %<extra></extra>",
            )
        ],
        title,
        xaxis={"title": "percentile within the run (%)", "range": [0, 100.5]},
        yaxis={"autorange": "reversed"},
        height=max(220, 28 * len(df) + 90),
        annotations=[
            dict(
                x=0,
                y=d,
                text=NOT_SCORED,
                xanchor="left",
                showarrow=False,
                font=dict(color="gray", style="italic"),
            )
            for d in missing
        ],
    )


# One colour per plain cause (the incidents' causes); a cause not listed gets a fixed one from
# its name, as detectors do.
_CAUSE_COLORS = {
    "too dark": "#3B4B8C",
    "too bright": "#F2B701",
    "fog or haze": "#9ECAE9",
    "blur": "#B279A2",
    "camera moved": "#E45756",
    "something in the scene": "#54A24B",
    "unusual": "#9A9A9A",
}


def cause_color(cause: str) -> str:
    """The plain cause's colour, the same on every chart."""
    if cause in _CAUSE_COLORS:
        return _CAUSE_COLORS[cause]
    digest = int(hashlib.blake2b(cause.encode(), digest_size=2).hexdigest(), 16)
    return _EXTRA[digest % len(_EXTRA)]


def incident_timeline(df: pd.DataFrame, total: int | None = None) -> go.Figure:
    """Incidents over the archive: one row per cause, each incident a line from its start to
    its end with a marker sized by its frames; `customdata[0]` is the incident id (WebGL).
    `total`: how many incidents there are when `df` holds only some (the longest)."""
    title = "Incidents over the archive"
    if df.empty:
        return _empty(title, "No incidents among the filtered frames")
    if total is not None and total > len(df):
        title += f" (the {len(df):,} longest of {total:,})"
    causes = sorted(
        df["cause"].unique(),
        key=lambda c: (list(_CAUSE_COLORS).index(c) if c in _CAUSE_COLORS else 99, c),
    )
    traces: list[dict] = []
    start = df["started_at"].to_numpy(dtype="datetime64[ms]")
    end = df["ended_at"].to_numpy(dtype="datetime64[ms]")
    frames = df["n_frames"].to_numpy(dtype=float)
    ids = df["incident_id"].to_numpy(dtype=float)
    when = _minute_strings(df["started_at"])
    for cause in causes:
        rows = np.flatnonzero(df["cause"].to_numpy() == cause)
        # spans as one line trace broken by gaps (NaN-like None between incidents)
        xs = np.empty(3 * len(rows), dtype="datetime64[ms]")
        xs[0::3], xs[1::3], xs[2::3] = start[rows], end[rows], np.datetime64("NaT")
        traces.append(
            dict(
                type="scattergl",
                x=xs,
                y=[cause] * len(xs),
                mode="lines",
                line=dict(color=cause_color(cause), width=6),
                hoverinfo="skip",
                showlegend=False,
            )
        )
        traces.append(
            dict(
                type="scattergl",
                x=start[rows],
                y=[cause] * len(rows),
                mode="markers",
                name=cause,
                marker=dict(
                    color=cause_color(cause),
                    size=np.clip(5 + 3 * np.sqrt(frames[rows]), 6, 30),
                    line=dict(width=1, color="#FFFFFF"),
                ),
                customdata=np.c_[ids[rows], frames[rows]],
                text=when[rows],
                hovertemplate="incident %{customdata[0]}: %{text}, %{customdata[1]} frames"
                f"<extra>{cause}</extra>",
            )
        )
    return _fig(
        traces,
        title,
        xaxis={"title": "time (camera clock)"},
        yaxis={
            "title": None,
            "type": "category",
            "categoryorder": "array",
            "categoryarray": causes[::-1],
        },
        height=max(220, 46 * len(causes) + 120),
        showlegend=False,
    )


MOSAIC_HOUR_PX = 40  # display width of an hour cell
MOSAIC_MAX_HEIGHT = 800  # display height at most, whatever the archive's length
MOSAIC_OUTLINE = (228, 87, 86, 255)


def mosaic(
    png: bytes,
    days: list,
    cell_height: int,
    outlined: list[int],
    day_range: tuple | None = None,
    hour_range: tuple[int, int] = (0, 23),
) -> go.Figure:
    """The archive mosaic (`store.facts.mosaic`): its atlas cropped to the rows of `day_range`
    (first, last day, inclusive) and to `hour_range`, scaled to `MOSAIC_HOUR_PX` per hour and
    at most `MOSAIC_MAX_HEIGHT` pixels, the `outlined` cells (row * 24 + hour) outlined; drawn
    as one image, so it costs the same for any archive."""
    title = "The archive, an hour per cell (median of its thumbnails)"
    starts = np.asarray(days, dtype="datetime64[D]")
    atlas = Image.open(io.BytesIO(png)).convert("RGBA")
    n_rows = atlas.height // cell_height
    lo, hi = 0, n_rows
    if day_range is not None and day_range[0] is not None and len(starts):
        lo = max(0, int(np.searchsorted(starts, np.datetime64(day_range[0], "D"), "right")) - 1)
        hi = int(np.searchsorted(starts, np.datetime64(day_range[1], "D"), "right"))
    h0, h1 = hour_range if hour_range[0] <= hour_range[1] else (0, 23)
    if hi <= lo:
        return _empty(title, "No days of the mosaic among the filtered dates")
    width = atlas.width // 24
    part = atlas.crop((h0 * width, lo * cell_height, (h1 + 1) * width, hi * cell_height))
    rows = hi - lo
    row_px = max(1, min(24, MOSAIC_MAX_HEIGHT // rows))
    out_w, out_h = (h1 - h0 + 1) * MOSAIC_HOUR_PX, min(rows * row_px, MOSAIC_MAX_HEIGHT)
    scale = out_h / rows
    part = part.resize((out_w, out_h), Image.NEAREST if scale >= cell_height else Image.BOX)
    draw = ImageDraw.Draw(part)
    cells = np.asarray(outlined, dtype=np.int64)
    row, hour = cells // 24 - lo, cells % 24 - h0
    inside = (row >= 0) & (row < rows) & (hour >= 0) & (hour <= h1 - h0)
    line = 2 if scale >= 8 else 1
    for r, h in zip(row[inside], hour[inside]):
        y0, y1 = int(r * scale), max(int(r * scale), int((r + 1) * scale) - 1)
        draw.rectangle(
            (h * MOSAIC_HOUR_PX, y0, (h + 1) * MOSAIC_HOUR_PX - 1, y1),
            outline=MOSAIC_OUTLINE,
            width=line,
        )
    buffer = io.BytesIO()
    part.save(buffer, "PNG", compress_level=1)  # sent once: fast beats small
    source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    labelled = np.unique(np.linspace(0, rows - 1, min(rows, 24)).round().astype(int))
    return _fig(
        [dict(type="image", source=source, x0=0, y0=0, dx=1, dy=1, hoverinfo="skip")],
        title,
        xaxis={
            "title": "hour of day (camera clock)",
            "showgrid": False,
            "tickvals": [(h + 0.5) * MOSAIC_HOUR_PX for h in range(h1 - h0 + 1)],
            "ticktext": [str(h0 + h) for h in range(h1 - h0 + 1)],
        },
        yaxis={
            "showgrid": False,
            "tickvals": [(r + 0.5) * scale for r in labelled],
            "ticktext": [str(starts[lo + r]) for r in labelled],
        },
        # the picture keeps its aspect: a short archive gets a short chart, not a
        # thin strip under empty space
        height=min(MOSAIC_MAX_HEIGHT + 100, max(150, out_h + 100)),
    )
