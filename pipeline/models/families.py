"""Every model family by name: the one table `ModelSpec.builder` looks a family up in.

Each family object (the `Family` protocol in `pipeline.models.registry`) lives in the module of
its family; importing this table imports them, and with them NumPy (TensorFlow only when a Keras
model is built).
"""

from __future__ import annotations

from pipeline.models.hed import HED
from pipeline.models.imagenet import APPLICATIONS
from pipeline.models.keras_file import KERAS_FILE
from pipeline.models.pixels import PIXELS
from pipeline.models.registry import Family

FAMILIES: dict[str, Family] = {
    family.name: family for family in (HED, *APPLICATIONS, KERAS_FILE, PIXELS)
}
