"""Typed errors the pipeline raises for problems a user can fix; the CLI prints one line each.

Store problems (`store.StoreError` and subclasses) are handled the same way at the edge.
"""


class PipelineError(Exception):
    """Base class: the message says what went wrong and what to do."""


class InputError(PipelineError):
    """A folder, file or option given by the user is missing or unusable."""


class ModelUnavailableError(PipelineError):
    """An embedding model cannot be built here (e.g. weights missing and not downloadable)."""


class AnalysisError(PipelineError):
    """An analysis run cannot be done with the data in the store (e.g. no embeddings)."""


class WeatherError(PipelineError):
    """A weather file cannot be read, or the weather service cannot be reached."""
