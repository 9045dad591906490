"""Pickled fitted state that says which format it is in, upgraded or refused in one place per class.

A fitted run (`pipeline.fitted.FittedRun`) is pickled into the store by `analyze` and loaded
again by `score-new`, maybe by a newer version of this code. Every class of ours whose objects
are pickled in it derives from `Versioned`: its pickle carries the class's `format_version`,
and unpickling an older format hands the state to the class's `_upgrade(state, version)`,
the one place that knows what that format lacked. `_upgrade` fills it in or raises
`FittedFormatError` (the run must be analysed again); scoring code can then rely on every
attribute being there. Format 0 is every pickle saved before formats were recorded.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.errors import AnalysisError

FORMAT_KEY = "_format"  # the key of the format version in a pickled state


class FittedFormatError(AnalysisError):
    """A pickled fitted state this version cannot score with (too old to upgrade, or newer)."""


class Versioned:
    """A pickle of it records `format_version`; older formats go through `_upgrade`."""

    format_version: ClassVar[int] = 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__() or {})
        state[FORMAT_KEY] = self.format_version
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        found = state.pop(FORMAT_KEY, 0)
        if found > self.format_version:
            raise FittedFormatError(
                f"{type(self).__name__} was saved by a newer version of the pipeline (format "
                f"{found}; this version reads up to {self.format_version})"
            )
        if found < self.format_version:
            state = self._upgrade(state, found)
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)

    def _upgrade(self, state: dict[str, Any], version: int) -> dict[str, Any]:
        """The state of an older format `version` in this format (by default the same: the
        class has not changed). Raise `FittedFormatError` for one that cannot be upgraded."""
        return state
