"""Review & export: mark frames junk or keep one by one (highest-ranked unreviewed first, to
teach `learned`: the highest-ranked and one drawn at random in turn, at random, or where
`learned` is least sure) or in bulk
(the map / gallery selection, or every filtered frame); export the kept frames with the
filters applied as a file list, a CSV, or an ffmpeg concat file (`store.export`: the list
and the concat file name the real files, also those whose names are not valid UTF-8), or as an
MP4 video made by `python -m pipeline export` in a subprocess (`dashboard.video`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, filters, ui, video
from store.export import export_concat, export_csv, export_list, to_bytes
from store.facts import REVIEW_ORDERS

ORDER_NAMES = {
    "score": "highest score first",
    "teach": "to teach learned: the highest and one at random in turn",
    "random": "at random",
    "doubt": "where learned is least sure",
}

flt, opts = ui.current()
st.title("Review & export")
skipped = tuple(st.session_state.get("review_skipped", ()))
PREVIEW = 200
mode = st.session_state.get("export_mode", "not_junk")
order = st.session_state.get("review_order", "score")
counts, turn, next_row, n_export, preview = data.get_many(
    ("review_counts",),
    ("review_turn", order, flt.run_id),
    ("next_unreviewed_row", flt, skipped, order),
    ("export_count", flt, mode),
    ("export_frames", flt, mode, PREVIEW),
)
st.caption(
    f"Reviewed so far: {counts['junk']:,} junk, {counts['keep']:,} keep. "
    f"Showing {filters.describe(flt)}."
)

one, bulk, export = st.tabs(["One by one", "In bulk", "Export"])

with one:
    st.radio(
        "Offer frames",
        REVIEW_ORDERS,
        horizontal=True,
        key="review_order",
        format_func=ORDER_NAMES.get,
        help="Analysis learns what junk is on this camera from your verdicts (detector "
        "learned) and needs good frames as well as junk. To teach it, the highest-ranked "
        "frame and one drawn at random take turns, so both verdicts come early. At random "
        "alone is an unbiased draw: on a camera whose consensus is already good it can teach "
        "more, but few of its frames are junk. The draw is fixed: a frame skipped or "
        "reviewed is not offered again. Where learned is least sure offers the frames whose "
        "learned rank is nearest the rank where your junk and keep verdicts meet, the ones "
        "your reviews have not settled; it needs a run that learned from reviews (until then "
        "it offers frames to teach learned) and teaches most when you run analyze again "
        "every few dozen verdicts; where learned keeps the consensus as it is (the sidebar "
        "says so), at random teaches more.",
    )
    fid = int(next_row["frame_id"].iloc[0]) if len(next_row) else None
    if fid is None:
        st.success("Every filtered frame has a verdict (or was skipped).")
        if skipped and st.button("Show skipped frames again", key="review_unskip"):
            st.session_state["review_skipped"] = ()
            st.rerun()
    else:
        thumbs = data.thumbs_of(next_row)
        row = next_row.iloc[0]
        c1, c2 = st.columns([2, 1])
        with c1:
            if fid in thumbs:
                st.image(thumbs[fid], width="stretch")
        with c2:
            if row is not None:
                st.write(ui.caption_for(row, flt.detector))
            ui.frame_link(fid)
            note = st.text_input("Note (optional)", key="review_note", max_chars=500)
            k1, k2, k3 = st.columns(3)
            if k1.button("Junk", key="review_junk", icon=":material/delete:", type="primary"):
                data.set_verdicts([fid], "junk", note or None)
                st.rerun()
            if k2.button("Keep", key="review_keep", icon=":material/check:"):
                data.set_verdicts([fid], "keep", note or None)
                st.rerun()
            if k3.button("Skip", key="review_skip"):
                st.session_state["review_skipped"] = skipped + (fid,)
                st.rerun()
        if order == "score":
            st.caption(f"Frames are offered in {flt.detector} order, highest score first.")
        elif order == "random":
            st.caption("Frames are offered at random (a fixed draw of the filtered frames).")
        elif turn == "doubt":
            meet = data.get("doubt_rank", flt.run_id)
            st.caption(
                f"The frame learned is least sure of: its learned rank is the nearest to "
                f"{meet:.0%}, where your junk and keep verdicts meet. Run analyze again every "
                "few dozen verdicts, so that learned learns from them and the next frames "
                "offered are those it is still unsure of."
            )
        else:
            if order == "doubt":
                st.caption(
                    "Learned is not in this run yet (by default it needs 5 junk and 5 keep "
                    "verdicts, then analyze), so frames are offered to teach it."
                )
            which = (
                "A frame drawn at random from those left"
                if turn == "random"
                else f"The highest-ranked frame left by {flt.detector}"
            )
            st.caption(f"{which}. The highest-ranked and one drawn at random take turns.")

with bulk:
    sel = ui.selection()
    st.write(
        f"**Selection:** {filters.plural(len(sel), 'frame')} "
        "(ticked in the gallery or drawn on the map)."
    )
    if sel:
        picked, _ = data.get(
            "frames_page",
            flt.replace(frame_ids=tuple(sel), threshold_kind="all"),
            0,
            12,
            "score",
            True,
        )
        ui.thumb_grid(
            picked, flt.detector, n_cols=6, key="review_sel", thumbs=data.thumbs_of(picked)
        )
    target = st.radio(
        "Apply to",
        ["selection", "filtered"],
        horizontal=True,
        key="review_target",
        format_func={
            "selection": f"the selection ({len(sel):,})",
            "filtered": "every frame the filters keep",
        }.get,
    )
    verdict = st.radio(
        "Verdict",
        ["junk", "keep", "clear"],
        horizontal=True,
        key="review_verdict",
        format_func={"junk": "junk", "keep": "keep", "clear": "clear the verdict"}.get,
    )
    ids = sel if target == "selection" else data.get("frame_ids", flt)
    confirm = True
    if target == "filtered":
        confirm = st.checkbox(
            f"Yes, apply to all {filters.plural(len(ids), 'filtered frame')}",
            key="review_confirm",
        )
    if st.button(
        f"Apply to {filters.plural(len(ids), 'frame')}",
        key="review_apply",
        disabled=not ids or not confirm,
        type="primary",
    ):
        n = data.set_verdicts(ids, None if verdict == "clear" else verdict)
        st.toast(f"{filters.plural(n, 'frame')}: {verdict}.")
        if target == "selection":
            ui.set_selection([])
        st.rerun()

with export:
    mode = st.radio(
        "Frames to export",
        ["not_junk", "keep", "clean"],
        horizontal=True,
        key="export_mode",
        format_func={
            "not_junk": "every filtered frame not marked junk",
            "keep": "only frames marked keep",
            "clean": f"not junk and not flagged by {flt.detector}",
        }.get,
        help="The last keeps frames marked keep and the unreviewed frames the "
        "detector does not flag: a clean time-lapse without reviewing it all.",
    )
    st.write(
        f"**{filters.plural(n_export, 'frame')}** to export ({filters.describe(flt)}), "
        "in time order."
    )
    if n_export == 0:
        st.info("Nothing to export with these filters.")
    else:
        c1, c2, c3 = st.columns([1, 1, 1], vertical_alignment="bottom")
        fps = c1.number_input(
            "Frames per second",
            1,
            120,
            24,
            key="export_fps",
            help="Of the MP4 video and the ffmpeg concat file.",
        )
        width = c2.selectbox(
            "Video width (px)",
            video.WIDTHS,
            index=video.WIDTHS.index(video.DEFAULT_WIDTH),
            format_func=lambda w: "the frames' own (at most 1280)" if w is None else str(w),
            key="video_width",
            help="The height keeps the first frame's aspect; frames of another "
            "shape are letterboxed. Wider than the frames only blows them up.",
        )
        deflicker = c3.toggle(
            "Deflicker the video",
            key="video_deflicker",
            help="Smooth each frame's brightness over its neighbouring "
            "frames, as LRTimelapse does.",
        )

        # The files are built only when a download button is clicked.
        def frames() -> pd.DataFrame:
            return data.get("export_frames", flt, mode)

        def file_list() -> bytes:
            return to_bytes(export_list(frames()["abs_path"]))

        def csv_text() -> str:
            return export_csv(frames())

        def concat_text() -> bytes:
            return to_bytes(export_concat(frames()["abs_path"], int(fps), filters.describe(flt)))

        d1, d2, d3, d4 = st.columns(4)
        d1.download_button(
            "File list (.txt)",
            file_list,
            "frames.txt",
            "text/plain",
            key="export_txt",
            icon=":material/list:",
        )
        d2.download_button(
            "CSV", csv_text, "frames.csv", "text/csv", key="export_csv", icon=":material/table:"
        )
        d3.download_button(
            "ffmpeg concat",
            concat_text,
            "frames.ffconcat",
            "text/plain",
            key="export_ffconcat",
            icon=":material/movie:",
        )
        # A made video belongs to the filters, settings and store state it was made from.
        job = (flt, mode, int(fps), width, bool(deflicker), data.stamp(data.current_db()))
        made = st.session_state.get("video_made")
        if made is not None and made["job"] == job:
            d4.download_button(
                "MP4 video",
                made["data"],
                "timelapse.mp4",
                "video/mp4",
                key="export_mp4",
                icon=":material/videocam:",
            )
            st.caption("  \n".join(ui.literal(line) for line in made["summary"].splitlines()))
        elif d4.button(
            "Make MP4 video",
            key="video_make",
            icon=":material/videocam:",
            help="Encodes the frames into an H.264 MP4 (`python -m pipeline "
            "export`); then this button becomes the download.",
        ):
            st.session_state.pop("video_made", None)
            bar = st.progress(
                0.0, text=f"Reading and encoding {filters.plural(n_export, 'frame')}..."
            )

            def progress(done: int, total: int) -> None:
                bar.progress(
                    min(1.0, done / max(total, 1)), text=f"Encoding frame {done:,} of {total:,}"
                )

            result = video.make_video(
                data.current_db(), flt, mode, int(fps), width, bool(deflicker), progress
            )
            bar.empty()
            if result.error is not None:
                st.error(f"No video: {result.error}", icon=":material/error:")
            else:
                st.session_state["video_made"] = {
                    "job": job,
                    "data": result.data,
                    "summary": result.summary,
                }
                st.rerun()
        with st.expander("The same video from the command line (better for long videos)"):
            st.code(
                video.command_line(data.current_db(), flt, mode, int(fps), width, bool(deflicker)),
                language="bash",
            )
        st.dataframe(preview.drop(columns=["root"]), hide_index=True, width="stretch")
        if n_export > len(preview):
            st.caption(
                f"First {len(preview):,} of {n_export:,} rows shown; the downloads hold them all."
            )
