"""The `models` command's text: every registry key with its dim, input size, where its weights
come from and whether it can be built here now, and what a store holds vectors of."""

from __future__ import annotations

from pipeline.models.keras_setup import backend_summary
from pipeline.models.registry import DEFAULT_MODEL, REGISTRY
from pipeline.models.weights import keras_cache_dir


def describe_models(default: str = DEFAULT_MODEL, stored: list | None = None) -> str:
    """The `models` command's text: each key, dim, input size, weights and availability here.

    `stored` is `store.embeddings.list_model_rows()` of a store, to list what it holds.
    """
    header = f"{'model':<18} {'dim':>5} {'input':>5}  {'here':<4}  weights from / status"
    lines = [header, "-" * len(header)]
    for spec in REGISTRY.values():
        check = spec.available()
        mark = " *" if spec.key == default else ""
        dim = "-" if spec.dim is None else str(spec.dim)
        size = "-" if spec.input_size is None else str(spec.input_size)
        lines.append(
            f"{spec.key + mark:<18} {dim:>5} {size:>5}  {'yes' if check.ok else 'no':<4}"
            f"  {spec.weights_from}"
        )
        lines.append(f"{'':<38}{spec.description}; {check.detail}")
    lines.append(
        f"* default model. ImageNet weights go to {keras_cache_dir()} (Keras downloads "
        "them on first use when online); --weights FILE uses a file instead."
    )
    lines.append(backend_summary())
    if stored is not None:
        lines.append("")
        if not stored:
            lines.append("this store holds no vectors yet")
        else:
            lines.append(
                f"{'in this store':<18} {'dim':>5} {'vectors':>9}  {'precision':<9}  weights"
            )
            for row, n_vectors in stored:
                lines.append(
                    f"{row.model:<18} {row.dim:>5} {n_vectors:>9}  {row.precision:<9}  "
                    f"{row.weights}"
                )
    return "\n".join(lines)
