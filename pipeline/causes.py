"""The causes of junk a detector can see, and which of them a user counts as junk.

Every detector belongs to one cause (its class's `cause` fact, see `pipeline.detectors.base`):

- `quality`: the image itself is poor: blur, haze, fog or smoke, water or dirt on the lens,
  glare, too dark or washed out;
- `camera`: the camera moved, was knocked or zoomed;
- `scene`: something in front of the lens or new in the scene: a person, an animal, a vehicle,
  drops on the lens;
- `rarity`: the frame is unlike its neighbours in time, unlike the same hour on other days, or
  unlike any other frame.

`analyze` writes one score per cause beside the detectors (detector name `cause:<cause>`), and
the consensus is the sum of the causes a user counts as junk (setting `junk_causes`; unset,
all four less a scene cause that mostly says what kind of day it is,
`pipeline.detectors.consensus.default_causes`): a building-site camera, whose diggers and
trucks are the point, counts `quality,camera`. This module is light (no NumPy) so that settings can check the names. The
store names a cause's score (`store.causes.cause_key`) and can sum other causes again
(`store.causes`: the dashboard's and export's "junk causes"); the dashboard also proposes the
causes the user's own junk/keep reviews rank best (`dashboard.metrics.suggest_causes`).
"""

from __future__ import annotations

CAUSES: dict[str, str] = {
    "quality": "the image is poor: blur, haze, fog or smoke, water or dirt on the lens, glare, "
    "too dark or washed out (against the camera's own good frames under the same sun)",
    "camera": "the camera moved, was knocked or zoomed",
    "scene": "something in front of the lens or new in the scene: a person, an animal, a "
    "vehicle, drops on the lens",
    "rarity": "unlike its neighbours in time, the same hour on other days, or any other frame",
}


def check_causes(names: list[str] | tuple[str, ...], what: str = "junk_causes") -> list[str]:
    """The names in order without repeats; a ValueError naming the known causes for an unknown
    one or for none at all."""
    names = list(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
    unknown = [n for n in names if n not in CAUSES]
    if unknown:
        raise ValueError(
            f"{what}: unknown cause(s) {', '.join(unknown)}; known: {', '.join(CAUSES)}"
        )
    if not names:
        raise ValueError(f"{what}: name at least one cause of {', '.join(CAUSES)}")
    return names
