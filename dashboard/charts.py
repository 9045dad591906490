"""Pure chart functions: DataFrame in, Plotly Figure out (no Streamlit, no store).

One colour per detector and per cluster everywhere (`detector_color`, `cluster_color`). Figures
leave backgrounds and fonts to the Streamlit theme (`st.plotly_chart(theme="streamlit")`), so
they read in light and dark mode; colours are chosen to work on both. Scores: higher = more
abnormal; percentiles are 0..1 ranks shown as 0-100 %.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import metrics

# Fixed detector colours (Okabe-Ito / Tableau hues readable on white and on near-black).
_DETECTOR_COLORS = {
    "consensus": "#E45756", "iforest": "#4C78A8", "lof": "#F58518", "knn": "#54A24B",
    "ecod": "#B279A2", "copod": "#9D755D", "hbos": "#EECA3B", "temporal": "#72B7B2",
    "same_time": "#FF9DA6", "dark": "#8C8C8C", "overexposed": "#F2CF5B", "blurry": "#79706E",
    "low_information": "#BAB0AC", "haze": "#9ECAE9",
}
_EXTRA = ["#17BECF", "#BCBD22", "#AF7AA1", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD"]
_CLUSTER_PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B",
                    "#B279A2", "#FF9DA6", "#9D755D", "#79C36A", "#D37295", "#59A14F",
                    "#EDC948", "#AF7AA1", "#76B7B2", "#FF9D9A"]
NOISE_COLOR = "#9A9A9A"
DAYLIGHT_COLORS = {"day": "#F2B701", "twilight": "#E17C05", "night": "#3B4B8C"}
CONDITION_COLORS = {"clear": "#F2B701", "cloudy": "#8C9BAB", "rain": "#3D7DCA",
                    "snow": "#A8D8F0", "fog": "#B7A99A", "drizzle": "#6FA8DC",
                    "storm": "#6A3D9A", "unknown": "#C9C9C9"}
SCORE_SCALE = "Viridis"
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), legend=dict(title=None))


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
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False,
                      annotations=[dict(text=message, showarrow=False, x=0.5, y=0.5,
                                        xref="paper", yref="paper")], **_LAYOUT)
    return fig


def outliers_bar(df: pd.DataFrame) -> go.Figure:
    """Frames flagged per detector (bar per detector, its own colour)."""
    title = "Frames flagged per detector"
    if df.empty:
        return _empty(title, "No analysis run yet")
    fig = go.Figure(go.Bar(
        x=df["detector"], y=df["n_flagged"],
        marker_color=[detector_color(d) for d in df["detector"]],
        customdata=np.c_[df["flagged_share"] * 100, df["n_scored"]],
        hovertemplate="%{x}: %{y} frames flagged (%{customdata[0]:.1f} % of "
                      "%{customdata[1]})<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="detector", yaxis_title="frames flagged",
                      **_LAYOUT)
    return fig


def calendar_heatmap(df: pd.DataFrame, value: str = "n_frames") -> go.Figure:
    """Day x hour-of-day heatmap of frame count (`n_frames`) or outlier rate (`outlier_rate`)."""
    title = ("Frames per hour" if value == "n_frames"
             else "Share of frames flagged per hour")
    if df.empty:
        return _empty(title)
    days = sorted(df["day"].unique())
    grid = df.pivot_table(index="day", columns="hour", values=value, aggfunc="first")
    grid = grid.reindex(index=days, columns=range(24))
    z = grid.to_numpy(dtype=float)
    if value == "outlier_rate":
        z = z * 100
    labels = [pd.Timestamp(d).strftime("%a %d %b %Y") for d in grid.index]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(24)), y=labels, colorscale="Blues" if value == "n_frames" else "Reds",
        colorbar=dict(title="frames" if value == "n_frames" else "% flagged"),
        hovertemplate=("%{y} %{x}:00 — %{z:.0f} frames<extra></extra>" if value == "n_frames"
                       else "%{y} %{x}:00 — %{z:.1f} % flagged<extra></extra>"),
        xgap=1, ygap=1))
    fig.update_layout(title=title, xaxis_title="hour of day (camera clock)",
                      yaxis=dict(autorange="reversed", type="category"),
                      height=max(260, min(900, 22 * len(labels) + 120)), **_LAYOUT)
    fig.update_xaxes(dtick=2)
    return fig


def timeline(df: pd.DataFrame) -> go.Figure:
    """Frames per time bucket, split into flagged and not flagged (stacked bars)."""
    title = "Timeline"
    if df.empty:
        return _empty(title)
    minutes = int(df["bucket_minutes"].iloc[0])
    unit = f"{minutes} min" if minutes < 60 else (f"{minutes // 60} h" if minutes < 1440
                                                  else f"{minutes // 1440} d")
    normal = df["n_frames"] - df["n_flagged"]
    fig = go.Figure()
    fig.add_bar(x=df["bucket"], y=normal, name="not flagged", marker_color="#4C78A8")
    fig.add_bar(x=df["bucket"], y=df["n_flagged"], name="flagged", marker_color="#E45756")
    fig.update_layout(title=f"{title} (frames per {unit})", barmode="stack",
                      xaxis_title="time (camera clock)", yaxis_title=f"frames per {unit}",
                      bargap=0.05, **_LAYOUT)
    return fig


COLOR_BY = ("cluster", "score", "daylight", "condition")


def _minute_strings(values: pd.Series) -> np.ndarray:
    """Timestamps as 'YYYY-MM-DD HH:MM' in a fixed-width numpy string array ('' when NaT),
    formatted in one vectorised call instead of one strftime per point."""
    stamps = pd.to_datetime(values).to_numpy(dtype="datetime64[m]")
    text = np.datetime_as_string(stamps, unit="m")
    text = np.char.replace(text, "T", " ")
    return np.where(np.isnat(stamps), "", text)


def map_scatter(df: pd.DataFrame, color_by: str = "cluster", detector: str = "consensus"
                ) -> go.Figure:
    """The 2-D embedding map as a WebGL scatter; `customdata[0]` is the frame id."""
    title = "Embedding map"
    if df.empty:
        return _empty(title, "No map coordinates for these frames (run `analyze`)")
    fig = go.Figure()
    size = 8 if len(df) < 2_000 else (5 if len(df) < 20_000 else 3)
    hover = ("frame %{customdata[0]}<br>%{text}<br>score percentile "
             "%{customdata[1]:.1f} %<extra>%{fullData.name}</extra>")
    # Numeric customdata (frame id, percentile) and a fixed-width string array for the time:
    # Plotly copies every trace's arrays, and an object array is copied element by element
    # (20,000 points: 100 ms), a numeric or fixed-width one in one go.
    when_all = _minute_strings(df["taken_at"])

    def custom(part: pd.DataFrame) -> np.ndarray:
        return np.c_[part["frame_id"].to_numpy(dtype=float),
                     part["score_pct"].to_numpy(dtype=float, na_value=0.0) * 100]

    if color_by == "score":
        fig.add_trace(go.Scattergl(
            x=df["map_x"].to_numpy(dtype=float), y=df["map_y"].to_numpy(dtype=float),
            mode="markers", name=f"{detector} percentile",
            customdata=custom(df), text=when_all, hovertemplate=hover,
            marker=dict(size=size, color=df["score_pct"].fillna(0) * 100, colorscale=SCORE_SCALE,
                        cmin=0, cmax=100, colorbar=dict(title=f"{detector}<br>percentile %"))))
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
            fig.add_trace(go.Scattergl(
                x=part["map_x"].to_numpy(dtype=float), y=part["map_y"].to_numpy(dtype=float),
                mode="markers", name=name, customdata=custom(part), text=when_all[rows],
                hovertemplate=hover,
                marker=dict(size=size, color=color, opacity=0.8)))
    fig.update_layout(title=title, xaxis_title="map x", yaxis_title="map y",
                      dragmode="lasso", height=560, **_LAYOUT)
    return fig


def cluster_sizes(df: pd.DataFrame) -> go.Figure:
    title = "Frames per cluster"
    if df.empty:
        return _empty(title, "No clusters (run `analyze`)")
    labels = [cluster_label(c) for c in df["cluster"]]
    fig = go.Figure(go.Bar(
        x=labels, y=df["n_frames"], marker_color=[cluster_color(c) for c in df["cluster"]],
        customdata=np.c_[df["night_share"] * 100, df["n_flagged"]],
        hovertemplate="%{x}: %{y} frames, %{customdata[0]:.0f} % night, "
                      "%{customdata[1]} flagged<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="cluster", yaxis_title="frames", **_LAYOUT)
    return fig


def cluster_profile(df: pd.DataFrame, kind: str = "hour") -> go.Figure:
    """Frames per hour of day (kind='hour', a line per cluster, hours without frames at 0) or
    per day (kind='day', stacked bars per cluster)."""
    title = "Hour-of-day profile" if kind == "hour" else "Date profile"
    part = df[df["kind"] == kind]
    if part.empty:
        return _empty(title)
    fig = go.Figure()
    for cluster, rows in part.groupby("cluster", sort=True):
        name, color = cluster_label(cluster), cluster_color(cluster)
        if kind == "hour":
            counts = rows.assign(h=rows["key"].astype(int)).set_index("h")["n_frames"]
            counts = counts.reindex(range(24), fill_value=0)
            fig.add_trace(go.Scatter(x=list(range(24)), y=counts.to_numpy(), name=name,
                                     mode="lines+markers", line=dict(color=color)))
        else:
            fig.add_trace(go.Bar(x=pd.to_datetime(rows["key"]), y=rows["n_frames"], name=name,
                                 marker_color=color))
    fig.update_layout(title=title, yaxis_title="frames",
                      xaxis_title="hour of day (camera clock)" if kind == "hour" else "day",
                      barmode="stack", **_LAYOUT)
    if kind == "hour":
        fig.update_xaxes(range=[-0.5, 23.5], dtick=2)
    return fig


def rank_scatter(wide: pd.DataFrame, a: str, b: str) -> go.Figure:
    """Each frame's percentile under detector A against detector B (WebGL)."""
    title = f"{a} vs {b}: score percentile"
    if wide.empty or a not in wide or b not in wide:
        return _empty(title)
    flag_a, flag_b = wide[a].ge(0.95), wide[b].ge(0.95)
    groups = [("neither in top 5 %", ~flag_a & ~flag_b, "#9A9A9A"),
              (f"only {a} in top 5 %", flag_a & ~flag_b, detector_color(a)),
              (f"only {b} in top 5 %", ~flag_a & flag_b, detector_color(b)),
              ("both in top 5 %", flag_a & flag_b, "#E45756" if "#E45756" not in (
                  detector_color(a), detector_color(b)) else "#7F3C8D")]
    fig = go.Figure()
    for name, mask, colour in groups:  # one colour per trace: per-point colours are slow
        part = wide[mask]
        fig.add_trace(go.Scattergl(
            x=part[a].to_numpy() * 100, y=part[b].to_numpy() * 100, mode="markers", name=name,
            marker=dict(size=4, color=colour, opacity=0.7),
            customdata=part[["frame_id"]].to_numpy(),
            hovertemplate=f"frame %{{customdata[0]}}<br>{a} %{{x:.1f}} %<br>{b} %{{y:.1f}} %"
                          "<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=f"{a} percentile (%)",
                      yaxis_title=f"{b} percentile (%)", height=480, **_LAYOUT)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, title=None))
    fig.update_xaxes(range=[0, 100.5])
    fig.update_yaxes(range=[0, 100.5])
    return fig


def _matrix(df: pd.DataFrame, title: str, zmin: float, zmax: float, fmt: str,
            scale: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(
        z=df.to_numpy(dtype=float), x=list(df.columns), y=list(df.index), zmin=zmin, zmax=zmax,
        colorscale=scale, text=np.vectorize(lambda v: format(v, fmt))(df.to_numpy(dtype=float)),
        texttemplate="%{text}", hovertemplate="%{y} / %{x}: %{z:" + fmt + "}<extra></extra>"))
    fig.update_layout(title=title, yaxis=dict(autorange="reversed"), height=420, **_LAYOUT)
    return fig


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


def agreement_over_time(wide: pd.DataFrame, detectors: list[str], top_pct: float = 0.95
                        ) -> go.Figure:
    title = f"Agreement per day (flag = percentile >= {top_pct * 100:g} %)"
    df = metrics.agreement_by_day(wide, detectors, top_pct)
    if df.empty:
        return _empty(title)
    fig = go.Figure()
    fig.add_scatter(x=df["day"], y=df["agreement"] * 100, mode="lines+markers",
                    name="all agree", line=dict(color="#4C78A8"))
    fig.add_scatter(x=df["day"], y=df["any_flagged"] * 100, mode="lines+markers",
                    name="flagged by any", line=dict(color="#E45756", dash="dot"))
    fig.update_layout(title=title, xaxis_title="day", yaxis_title="% of frames",
                      yaxis_range=[0, 100.5], **_LAYOUT)
    return fig


def precision_at_k(wide: pd.DataFrame, labels: pd.DataFrame, detectors: list[str],
                   k_max: int = 200) -> go.Figure:
    title = "Precision@k against reviews / ground truth"
    df = metrics.precision_at_k(wide, labels, detectors, k_max)
    if df.empty:
        return _empty(title, "No labelled frames among the filtered ones")
    fig = go.Figure()
    for d in detectors:
        part = df[df["detector"] == d]
        fig.add_scatter(x=part["k"], y=part["precision"] * 100, mode="lines", name=d,
                        line=dict(color=detector_color(d)))
    fig.update_layout(title=title, xaxis_title="k (frames, highest scores first)",
                      yaxis_title="precision (%)", yaxis_range=[0, 100.5], **_LAYOUT)
    return fig


def roc_curves(wide: pd.DataFrame, labels: pd.DataFrame, detectors: list[str]) -> go.Figure:
    title = "ROC against reviews / ground truth"
    df, aucs = metrics.roc(wide, labels, detectors)
    if df.empty:
        return _empty(title, "Needs labelled anomalies and normal frames")
    fig = go.Figure()
    for d in detectors:
        part = df[df["detector"] == d]
        fig.add_scatter(x=part["fpr"], y=part["tpr"], mode="lines",
                        name=f"{d} (AUC {aucs[d]:.2f})", line=dict(color=detector_color(d)))
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                    line=dict(color="#9A9A9A", dash="dash"))
    fig.update_layout(title=title, xaxis_title="false positive rate",
                      yaxis_title="true positive rate", height=440, **_LAYOUT)
    return fig


def frame_scores(df: pd.DataFrame) -> go.Figure:
    """One frame's percentile under every detector (bar per detector)."""
    title = "Score percentile per detector"
    if df.empty:
        return _empty(title, "This frame has no scores in the chosen run")
    fig = go.Figure(go.Bar(
        x=df["score_pct"] * 100, y=df["detector"], orientation="h",
        marker_color=[detector_color(d) for d in df["detector"]],
        hovertemplate="%{y}: %{x:.1f} %<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="percentile within the run (%)",
                      xaxis_range=[0, 100.5], yaxis=dict(autorange="reversed"),
                      height=max(220, 28 * len(df) + 90), **_LAYOUT)
    return fig
