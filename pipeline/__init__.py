"""The pipeline: ingest frames, embed them, analyse, add weather and daylight, into one store.

Run it as `python -m pipeline --help`. Stages are incremental and resumable (see DESIGN.md).
"""

__version__ = "0.1.0"
