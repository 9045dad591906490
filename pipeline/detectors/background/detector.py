"""The `background` detector: what the fixed camera's learned background cannot explain.

The glue of the background family: it fits an eigen-background per daylight class
(`eigen.BackgroundModel`, with each pixel's noise by time of day) and an `alignment.Alignment`
per class from the stored thumbnails, picks the same-time reference frames
(`references.reference_slots`), and scores frames in time order, a few days at a time, holding
only the references of the days around them (`references.SameTimeReferences`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from pipeline.detectors.background.alignment import Alignment
from pipeline.detectors.background.eigen import (
    BackgroundModel,
    check_spread,
    project_by_class,
    stand_out,
)
from pipeline.detectors.background.grids import by_class, edge_map, log_rgb, split_chunks
from pipeline.detectors.background.references import SameTimeReferences, reference_slots
from pipeline.detectors.base import Detector, register
from pipeline.detectors.batch import FrameBatch, day_and_minute, day_blocks, daylight_classes
from pipeline.pixels import grid_size
from pipeline.threads import bounded_map, one_blas_thread
from pipeline.versioned import FittedFormatError


@register
class BackgroundDetector(Detector):
    """What the fixed camera's background cannot explain (see `pipeline.detectors.background`),
    in three parts whose evidence is summed:

    - scene: the residual against an eigen-background fitted per daylight class with at least
      `min_class_frames` frames, on at most `max_fit_frames` of them (a seeded sample), plus one
      over all frames when some class is smaller. With `time_of_day_noise`, each pixel's
      residual is measured against that pixel's residual at the frame's time of day
      (`TimeOfDayNoise`: where a shadow edge usually falls at 9:00, an edge there is noise),
      its range there being the deviation it stays within in a `noise_spread` share of the
      fit's frames at that hour (0.9: all but one frame in ten; 0.5 is the MAD);
    - same time: that residual after also rebuilding the frame from its `same_time_neighbors`
      nearest reference frames (one per class per `slot_minutes` slot of a day, from the fit)
      taken within `same_time_minutes` of its time of day on other days at most
      `same_time_days` days away. The sun stands where it stood then, so the shadows do too;
      a frame without such references counts its scene part twice (`same_time_neighbors=0`
      turns this part off);
    - alignment, only with `alignment_part` (runs fitted before the camera cause had its own
      `alignment` detector, `pipeline.detectors.camera`; new runs leave it out, so that this
      detector is the scene cause alone): whether the frame still lines up with its class's
      scene (`Alignment`: a knocked camera). A frame that lines up counts nothing; one that
      lines up better shifted counts its gain (how many standard deviations of the correlation
      surface the shifted peak stands above no shift), whatever the number of frames shifted
      with it. In a class where under `min_lines_up` of the fit's frames line up (night: the
      edges are sensor noise, and the peak wanders by chance), the part says nothing.

    Frames are compared as grids `width` pixels wide (64, as `alignment`'s): on the renders and
    the real cameras measured, a coarser grid than the 128 it was until 2026-12-05 scored as well
    or better (48 to 96 all did: a drop, a fox or a person still covers several grid pixels,
    while the fine texture that tells a clear day from a hazy one no longer counts as something
    in the scene), at about a quarter of the work per frame.

    The scene and same-time parts score how far a frame's highest pixel z-scores stand out
    (`stand_out`), each z-score first measured against the mean of the pixels around it, in a
    window `surround` of the grid's width across (0 turns this off): a drop on the lens
    stands out of a frosted lawn that is off all over. They are ranked among the fit's frames
    (p) and count -log(1 - p). Frames without a readable thumbnail get NaN. With fewer than
    `min_frames` readable thumbnails there is no background to learn (a dozen frames are a
    sample, not a scene's normal range), and it scores nothing.
    """

    key = "background"
    summary = (
        "something the fixed camera's learned background cannot explain (a person, "
        "an animal, a vehicle, drops on the lens)"
    )
    family = "background"
    cause = "scene"
    order = 10
    plain_cause = "something in the scene"
    moved_cause: ClassVar[str] = "camera moved"  # the plain cause of the alignment part
    format_version = 2
    needs = frozenset({"thumbnails"})
    in_consensus = True
    unscorable = (
        "(it learns the scene from the stored thumbnails and needs at least "
        "{min_frames} readable ones)"
    )

    def __init__(
        self,
        contamination: float = 0.05,
        n_components: int = 12,
        variance: float = 0.9,
        width: int = 64,
        top_share: float = 0.001,
        max_fit_frames: int = 1500,
        min_class_frames: int = 60,
        min_frames: int = 30,
        same_time_neighbors: int = 6,
        same_time_minutes: float = 30.0,
        same_time_days: int = 7,
        slot_minutes: float = 10.0,
        min_lines_up: float = 0.9,
        time_of_day_noise: bool = True,
        noise_spread: float = 0.9,
        surround: float = 0.16,
        alignment_part: bool = False,
        random_state: int = 0,
    ):
        self.contamination = contamination
        self.n_components = n_components
        self.variance = variance
        self.width = width
        self.top_share = top_share
        self.max_fit_frames = max_fit_frames
        self.min_class_frames = min_class_frames
        self.min_frames = min_frames
        self.same_time_neighbors = same_time_neighbors
        self.same_time_minutes = same_time_minutes
        self.same_time_days = same_time_days
        self.slot_minutes = slot_minutes
        self.min_lines_up = min_lines_up
        self.time_of_day_noise = time_of_day_noise
        self.noise_spread = noise_spread
        self.surround = surround
        self.alignment_part = alignment_part
        self.random_state = random_state

    def fit(self, batch):
        self._check_contamination()
        self._fit(batch)
        parts = self._parts(batch)
        self.part_reference_ = [np.sort(p[np.isfinite(p)]) for p in parts[:, :2].T]
        keys = self._class_keys(batch)
        self.lines_up_ = {}  # class -> share of its fit frames that line up at no shift
        for key, rows in by_class(keys):
            gains = parts[rows, 2][np.isfinite(parts[rows, 2])]
            self.lines_up_[key] = float((gains == 0).mean()) if len(gains) else 0.0
        self.decision_scores_ = self._combine(parts, keys)
        self.alignment_evidence_ = (
            self._alignment_evidence(parts[:, 2], keys)
            if self.alignment_part
            else np.zeros(len(batch))
        ).astype(np.float32)
        self._process_decision_scores()
        return self

    def cause_split(self) -> dict[str, np.ndarray]:
        """With the alignment part (runs fitted before the camera cause had its own
        `alignment` detector), a fit frame that lines up better shifted is "camera moved" as a
        whole: the shift also explains its residual against the scene. Any other frame's
        evidence (every frame's, without the part) is "something in the scene"."""
        moved = (self.alignment_evidence_ > 0).astype(float)
        return {self.plain_cause: 1.0 - moved, self.moved_cause: moved}

    def decision_function(self, batch):
        return self._combine(self._parts(batch), self._class_keys(batch))

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        # format 0 fitted before the same-time part or the alignment part cannot be scored
        # now; the settings added since then get the values that fit had without them.
        # Formats before 2 counted the alignment part here (there was no `alignment`) and did
        # not keep the fit's alignment evidence (only incidents read it, at analysis time): none
        # of their evidence is counted as a moved camera.
        if version == 0 and ("part_reference_" not in state or "lines_up_" not in state):
            raise FittedFormatError(
                "its background detector was fitted before the same-time "
                "and alignment parts, which this version scores with"
            )
        if version == 0:
            state = {"time_of_day_noise": False, "noise_spread": 0.5, "surround": 0.0, **state}
        scores = state.get("decision_scores_")
        return {
            "alignment_part": True,
            "alignment_evidence_": np.zeros(0 if scores is None else len(scores)),
            **state,
        }

    def _fit(self, batch):
        check_spread(self.noise_spread, "noise_spread")  # before any thumbnail is decoded
        self.models_: dict[str, BackgroundModel] = {}
        self.size_ = None
        self.references_ = None
        if batch.pixels is None or len(batch) < self.min_frames:
            return
        self.size_ = grid_size(batch.pixels.aspect(batch.frame_ids), self.width)
        rng = np.random.default_rng(self.random_state)
        classes = daylight_classes(batch)
        samples = {}
        for name in dict.fromkeys(classes):
            members = np.flatnonzero(classes == name)
            if len(members) >= self.min_class_frames:
                samples[name] = _sample(members, self.max_fit_frames, rng)
        if len(samples) < len(set(classes)):  # frames of a small class: one model over all
            samples["all"] = _sample(np.arange(len(batch)), self.max_fit_frames, rng)
        wanted = np.unique(np.concatenate(list(samples.values())))
        have = np.zeros(len(batch), bool)
        row_of = np.full(len(batch), -1)
        parts = []
        for pos, grids in batch.pixels.grids(batch.frame_ids[wanted], self.size_):
            have[wanted[pos]] = True
            parts.append(
                (wanted[pos], log_rgb(grids), edge_map(grids) if self.alignment_part else None)
            )
        if not parts:
            return
        order = np.concatenate([p for p, _, _ in parts])
        flat = np.concatenate([f for _, f, _ in parts])
        edges = np.concatenate([e for _, _, e in parts]) if self.alignment_part else None
        row_of[order] = np.arange(len(order))
        jobs = [(name, row_of[members[have[members]]]) for name, members in samples.items()]
        days, minutes = day_and_minute(batch.local_time)
        flat_minutes = minutes[order] if self.time_of_day_noise else None

        def fit_one(job):
            name, rows = job
            model = BackgroundModel(self.n_components, self.variance, self.random_state).fit(
                flat[rows],
                self.size_,
                noise_spread=self.noise_spread,
                minutes=None if flat_minutes is None else flat_minutes[rows],
            )
            model.alignment_ = Alignment(edges[rows]) if edges is not None else None
            return name, model

        with one_blas_thread():  # the classes are fitted in threads instead
            self.models_ = dict(
                bounded_map(
                    fit_one, [(name, rows) for name, rows in jobs if len(rows) >= self.min_frames]
                )
            )
        if self.models_:
            by_time = np.argsort(batch.local_time, kind="stable")
            refs = reference_slots(classes, days, minutes, by_time, self.slot_minutes)
            self.references_ = {
                "frame_id": batch.frame_ids[refs],
                "daylight": classes[refs],
                "day": days[refs],
                "minute": minutes[refs],
            }

    def _model(self, name: str):
        return (
            self.models_.get(name) or self.models_.get("all") or next(iter(self.models_.values()))
        )  # a class the fit never saw

    def _top(self) -> int:
        return max(1, int(round(self.top_share * self.size_[0] * self.size_[1])))

    def _surround(self) -> int:
        """The odd side in grid pixels of the window a pixel is measured against (0: none)."""
        share = self.surround
        return 2 * int(round(share * self.size_[0] / 2)) + 1 if share > 0 else 0

    def _parts(self, batch: FrameBatch) -> np.ndarray:
        """[frames, 3]: the scene part, the same-time part and the alignment gain (NaN without
        an image; the same-time part also without references, the gain also without structure
        to line up). Here, or by the batch's `spread` (in groups of whole days: a frame's parts
        depend only on it and its references, which `_parts_of` reads itself)."""
        if batch.spread is not None and batch.pixels is not None and self.models_:
            return batch.spread.run(self._parts_of, batch)
        return self._parts_of(batch)

    def _parts_of(self, batch: FrameBatch) -> np.ndarray:
        out = np.full((len(batch), 3), np.nan)
        if batch.pixels is None or not self.models_:
            return out
        days, minutes = day_and_minute(batch.local_time)
        known = self.references_
        refs = None
        if known is not None and self.same_time_neighbors >= 1:
            ref_classes = np.array([self._class_key(n) for n in known["daylight"]], dtype=object)
            models = {n: self._model(n) for n in set(ref_classes)}
            refs = SameTimeReferences(
                known["frame_id"],
                ref_classes,
                known["day"],
                known["minute"],
                models,
                batch.pixels,
                self.size_,
                self.same_time_neighbors,
                self.same_time_minutes,
                self.same_time_days,
            )
        top, surround = self._top(), self._surround()

        def score(projected):
            """The parts for frames of one class: positions, class, coefficients, residuals
            and alignment gains."""
            pos, name, coef, residual, gains = projected
            scores = np.full((len(pos), 3), np.nan)
            scores[:, 2] = gains
            model = self._model(name)
            if refs is not None:
                found, left = refs.explain(name, days[pos], minutes[pos], coef, residual, pools)
                if found.any():
                    scores[found, 1] = stand_out(model.pixel_z(left), top, self.size_, surround)
            scores[:, 0] = stand_out(
                model.pixel_z(residual, minutes[pos]), top, self.size_, surround
            )
            return pos, scores

        def decode_and_score(piece):
            # pieces of 128 frames: each temporary is 3.5 MB (a 64 x 36 grid) instead of 28 MB
            # for a chunk of 1,024, so it is reused from the heap instead of mapped and faulted
            # in anew
            pos, grids = piece
            return [
                score((pos[rows], name, coef, residual, gains))
                for name, rows, coef, residual, gains in project_by_class(
                    grids, ref_class[pos], self._model
                )
            ]

        # frames in time order, a few days at a time, so that the references in memory are
        # those days' +- same_time_days. A frame that is a held reference is scored from its
        # held residual; the others are decoded. Pieces are scored in threads (NumPy releases
        # the GIL).
        ref_class = self._class_keys(batch)
        done = np.zeros(len(batch), bool)
        span = max(1, int(self.same_time_days))
        by_time = np.argsort(days, kind="stable")
        dated = days[by_time] >= 0  # frames of unknown days (-1) last, in a block of their own
        blocks = list(day_blocks(by_time[dated], days[by_time][dated], span, size=None))
        blocks += [by_time[~dated]] if (~dated).any() else []

        def window(block):  # the days whose references a block needs (None: unknown days)
            block_days = days[block]
            return (block_days[0] - span, block_days[-1] + span) if block_days[0] >= 0 else None

        # while a block is scored, the next block's references are decoded in another thread;
        # the block is scored with the pool as it was when the block began (`pools`), so that
        # its scores do not depend on when the next block's pool replaces it
        pools = None
        with one_blas_thread(), ThreadPoolExecutor(1) as loader:
            ahead = None
            if refs is not None and blocks and window(blocks[0]):
                ahead = loader.submit(refs.load, *window(blocks[0]))
            for i, block in enumerate(blocks):
                if ahead is not None:
                    ahead.result()
                    ahead = None
                    pools = refs.pool
                    if i + 1 < len(blocks) and window(blocks[i + 1]):
                        ahead = loader.submit(
                            refs.load, *window(blocks[i + 1]), keep_from=window(block)[0]
                        )
                if refs is not None and window(block):
                    held = (
                        (block[pos], name, coef, res, gains)
                        for pos, name, coef, res, gains in refs.take(batch.frame_ids[block], pools)
                    )
                    for pos, scores in bounded_map(score, held):
                        out[pos] = scores
                        done[pos] = True
                rest = block[~done[block]]
                chunks = (
                    (rest[pos], grids)
                    for pos, grids in split_chunks(
                        batch.pixels.grids(batch.frame_ids[rest], self.size_)
                    )
                )
                for scored in bounded_map(decode_and_score, chunks):
                    for pos, scores in scored:
                        out[pos] = scores
        return out

    def _class_key(self, name: str) -> str:
        """The model (and reference pool) a daylight class is scored with."""
        return name if name in self.models_ else "all" if "all" in self.models_ else name

    def _class_keys(self, batch: FrameBatch) -> np.ndarray:
        names, inverse = np.unique(daylight_classes(batch), return_inverse=True)
        return np.array([self._class_key(n) for n in names], dtype=object)[inverse]

    def _combine(self, parts: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Sum of the parts' tail evidence. Scene and same-time parts: -log(1 - p), p the
        part's rank among the fit's frames (over n + 1, so the top fit frame counts
        log(n + 1)); without a same-time part, the scene part counts twice. Alignment: 0 for a
        frame that lines up (or has nothing to line up), else its gain, in the classes whose
        fit frames line up (`min_lines_up`)."""
        evidence = np.full((len(parts), 2), np.nan)
        for j, reference in enumerate(self.part_reference_[:2]):
            ok = np.isfinite(parts[:, j])
            if len(reference) and ok.any():
                p = np.searchsorted(reference, parts[ok, j], side="right") / (len(reference) + 1)
                evidence[ok, j] = -np.log1p(-p)
        scene, same_time = evidence.T
        local = scene + np.where(np.isfinite(same_time), same_time, scene)
        if not self.alignment_part:
            return local
        return local + self._alignment_evidence(parts[:, 2], keys)

    def _alignment_evidence(self, gains: np.ndarray, keys: np.ndarray) -> np.ndarray:
        reliable = np.isin(
            keys, [k for k, share in self.lines_up_.items() if share >= self.min_lines_up]
        )
        shifted = reliable & np.isfinite(gains) & (gains > 0)
        return np.where(shifted, gains, 0.0)


def _sample(positions: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    if len(positions) <= k:
        return positions
    return np.sort(rng.choice(positions, size=k, replace=False))
