"""Review & export: mark frames junk or keep one by one (highest-ranked unreviewed first) or in
bulk (the map / gallery selection, or every filtered frame); export the kept frames with the
filters applied as a file list, a CSV, or an ffmpeg concat file."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from dashboard import data, filters, ui

flt, opts = ui.current()
st.title("Review & export")
skipped = tuple(st.session_state.get("review_skipped", ()))
counts, next_id, frames_all = data.get_many(
    ("review_counts",), ("next_unreviewed", flt, skipped),
    ("export_frames", flt, st.session_state.get("export_mode", "not_junk")))
st.caption(f"Reviewed so far: {counts['junk']:,} junk, {counts['keep']:,} keep. "
           f"Showing {filters.describe(flt)}.")

one, bulk, export = st.tabs(["One by one", "In bulk", "Export"])

with one:
    fid = next_id
    if fid is None:
        st.success("Every filtered frame has a verdict (or was skipped).")
        if skipped and st.button("Show skipped frames again", key="review_unskip"):
            st.session_state["review_skipped"] = ()
            st.rerun()
    else:
        (page, _), thumbs = data.get_many(
            ("frames_page", flt.replace(frame_ids=(fid,)), 0, 1, "score"), ("thumbnails", [fid]))
        row = page.iloc[0] if len(page) else None
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
        st.caption(f"Frames are offered in {flt.detector} order, highest score first.")

with bulk:
    sel = ui.selection()
    st.write(f"**Selection:** {len(sel):,} frames (ticked in the gallery or drawn on the map).")
    if sel:
        preview, _ = data.get("frames_page", flt.replace(frame_ids=tuple(sel),
                                                         threshold_kind="all"), 0, 12, "score")
        ui.thumb_grid(preview, flt.detector, n_cols=6, key="review_sel")
    target = st.radio("Apply to", ["selection", "filtered"], horizontal=True, key="review_target",
                      format_func={"selection": f"the selection ({len(sel):,})",
                                   "filtered": "every frame the filters keep"}.get)
    verdict = st.radio("Verdict", ["junk", "keep", "clear"], horizontal=True,
                       key="review_verdict", format_func={"junk": "junk", "keep": "keep",
                                                          "clear": "clear the verdict"}.get)
    ids = sel if target == "selection" else data.get("frame_ids", flt)
    confirm = True
    if target == "filtered":
        confirm = st.checkbox(f"Yes, apply to all {len(ids):,} filtered frames",
                              key="review_confirm")
    if st.button(f"Apply to {len(ids):,} frames", key="review_apply",
                 disabled=not ids or not confirm, type="primary"):
        n = data.set_verdicts(ids, None if verdict == "clear" else verdict)
        st.toast(f"{n:,} frames: {verdict}.")
        if target == "selection":
            ui.set_selection([])
            for key in [k for k in st.session_state if str(k).startswith(ui.PICK_PREFIX)]:
                st.session_state.pop(key, None)
        st.rerun()

with export:
    mode = st.radio("Frames to export", ["not_junk", "keep"], horizontal=True, key="export_mode",
                    format_func={"not_junk": "every filtered frame not marked junk",
                                 "keep": "only frames marked keep"}.get)
    frames = data.get("export_frames", flt, mode)
    st.write(f"**{len(frames):,} frames** to export ({filters.describe(flt)}), in time order.")
    if frames.empty:
        st.info("Nothing to export with these filters.")
    else:
        fps = st.number_input("Frames per second (for the ffmpeg concat file)", 1, 120, 24,
                              key="export_fps")
        csv = io.StringIO()
        frames.assign(taken_at=frames["taken_at"].astype(str)).to_csv(csv, index=False)
        # The .txt list and the concat file are one path per line: a file name holding a line
        # break would split into lines of its own (e.g. an injected `file '...'` directive).
        one_line = ~frames["abs_path"].astype(str).str.contains("[\r\n]", regex=True)
        if not one_line.all():
            st.warning(f"{int((~one_line).sum())} frame(s) have a line break in their file name "
                       "and are left out of the .txt list and the ffmpeg concat file (the CSV "
                       "has them).", icon=":material/warning:")
        paths = frames.loc[one_line, "abs_path"].astype(str).tolist()
        listing = "".join(p + "\n" for p in paths)
        duration = 1.0 / float(fps)
        concat = ["ffconcat version 1.0",
                  f"# {len(paths)} frames; {filters.describe(flt)}",
                  f"# ffmpeg -f concat -safe 0 -i frames.ffconcat -vf fps={int(fps)} "
                  "-pix_fmt yuv420p timelapse.mp4"]
        for path in paths:
            concat += ["file '" + path.replace("'", "'\\''") + "'", f"duration {duration:.6f}"]
        if paths:
            concat.append("file '" + paths[-1].replace("'", "'\\''") + "'")
        d1, d2, d3 = st.columns(3)
        d1.download_button("File list (.txt)", listing, "frames.txt", "text/plain",
                           key="export_txt", icon=":material/list:")
        d2.download_button("CSV", csv.getvalue(), "frames.csv", "text/csv", key="export_csv",
                           icon=":material/table:")
        d3.download_button("ffmpeg concat", "\n".join(concat) + "\n", "frames.ffconcat",
                           "text/plain", key="export_ffconcat", icon=":material/movie:")
        st.dataframe(frames.head(200).drop(columns=["root"]), hide_index=True, width="stretch")
        if len(frames) > 200:
            st.caption(f"First 200 of {len(frames):,} rows shown; the downloads hold them all.")
