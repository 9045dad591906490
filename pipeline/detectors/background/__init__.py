"""The background family: what a frame shows that the camera's learned background cannot explain.

A fixed camera sees the same scene under changing light. In log-RGB (where a change of light
becomes an offset) with each frame's median removed, the normal frames of one daylight class
(day, twilight, night) lie close to a low-dimensional subspace: a few principal components
describe the sun moving, clouds, shadows and seasons. This is the eigen-background of Oliver,
Rosario & Pentland (2000). A person, a fox, a bird, water drops or a knocked camera are not in
that subspace, so they remain in the residual; each pixel's residual is turned into a robust
z-score against that pixel's typical residual (the sky and the trees move every frame, the shed
does not). A frame's score is how far its highest z-scores (the top `top_share` of pixels)
stand out from the rest of the same frame (`stand_out`): a small object counts in full instead
of being averaged over the frame, and a change all over the frame (rain, fog, a dropped
exposure: the quality checks' job) does not count. Each z-score is first measured against the
pixels around it (`less_surroundings`), so that a region that is off all over (a frosted lawn,
a shadowed wall) does not hide a small object elsewhere in the frame. The fit is robust:
frames that own a principal component are left out of a second fit, so a foggy hour or a
knocked camera does not become part of the background.

A few components cannot follow a shadow edge sweeping across the lawn, so on sunny days the
edge is what stands out most. Two things put it back in its place. Where the edge falls depends
on the time of day, so each pixel's residual is measured against that pixel's residual at the
frame's time of day (`TimeOfDayNoise`): in the band the edge crosses at 9:00, an edge at 9:00
is ordinary noise, and at noon it is not. A pixel's range at that hour is what it does on all
but one frame in ten, so a place that is calm on most days and far off on some (clouds
breaking, the edge of a low winter sun on its few sunny mornings) is not an object when it
swings again. And the sun stands at the same place at the same time
of day on the days around, and the shadows with it: `SameTimeReferences` rebuilds a frame's residual
from the residuals of its nearest reference frames taken at that time of day on other days
(one reference per class per slot of a day) and scores what is left the same way. A shadow or
a cloud bank that another day had is explained; a person, a bird or drops on the lens are not.
The detector sums the evidence of both scores (`detector.BackgroundDetector`).

A knocked camera shows every edge of the scene a little off, all over the frame, so it does
not stand out locally: that is the camera cause's own detector (`alignment`,
`pipeline.detectors.camera`). `Alignment` (phase correlation of edge maps) is kept for runs
fitted before it, whose `background` counted a camera that no longer lined up.

Pixels come from the thumbnails the store already holds (`pipeline.pixels`). Frames are scored
in time order, a few days at a time, holding only the references of the days around them.

Modules: `detector` (the registered `background` detector: fit, score, evidence), `eigen`
(`BackgroundModel`, `TimeOfDayNoise`, `stand_out`), `alignment` (`Alignment`), `references`
(`SameTimeReferences`), `grids` (log-RGB, edge maps and chunks of pixel grids).
"""

from pipeline.detectors.background.detector import BackgroundDetector

__all__ = ["BackgroundDetector"]
