"""int8 inference (TensorFlow Lite full-integer quantization, XNNPACK on VNNI/AMX-INT8) against
float32 and bfloat16 Keras on a demo render: speed, the vectors, and the junk found; JSON.

    .venv/bin/python bench/int8.py --out DIR [--variant demo] [--model vgg16-hed-grid]
                                   [--calibration 64]

Needs the float32 and bfloat16 stores `bench/precision.py --out DIR` made for the variant. The
model is quantized with TensorFlow's own converter (`tf.lite.TFLiteConverter`, int8 weights and
activations, calibrated on `--calibration` frames of the render spread over its days), every
frame is embedded through `tf.lite.Interpreter` (`num_threads` = the cores), and the store is
analysed and compared with the float32 store as `bench/precision.py` compares bfloat16:
`vectors` (cosine, relative error, nearest other frame) and `store` (consensus daylight ROC-AUC,
worst kind, Spearman per detector, top-50 and flagged overlap). `speed`: frames/s of each way
on the same batches, interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from precision import compare, vector_figures  # noqa: E402
from quality import detector_table, target_summary  # noqa: E402

import store  # noqa: E402
from store import embeddings as se  # noqa: E402


def quantize(embedder, calibration: np.ndarray) -> bytes:
    import tensorflow as tf

    def representative():
        for image in calibration:
            yield [embedder._preprocess(image[None].astype(np.float32))]

    converter = tf.lite.TFLiteConverter.from_keras_model(embedder.model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    with contextlib.redirect_stdout(sys.stderr):  # the converter prints its SavedModel's outline
        return converter.convert()


class Int8Embedder:
    def __init__(self, blob: bytes, preprocess, batch: int):
        import tensorflow as tf

        self.interpreter = tf.lite.Interpreter(model_content=blob, num_threads=os.cpu_count())
        self.preprocess = preprocess
        self.batch = batch
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.resize_tensor_input(self.input, [batch, 224, 224, 3])
        self.interpreter.allocate_tensors()

    def embed(self, images: np.ndarray) -> np.ndarray:
        n = len(images)
        padded = np.zeros((self.batch, *images.shape[1:]), np.float32)
        padded[:n] = images
        self.interpreter.set_tensor(self.input, self.preprocess(padded))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output)[:n].reshape(n, -1).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variant", default="demo")
    parser.add_argument("--model", default="vgg16-hed-grid")
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from pipeline.analyze import analyze
    from pipeline.embed import load_frame
    from pipeline.models import get_model
    from pipeline.pixels import FrameDecodeError
    from pipeline.settings import Settings

    work = args.out / args.variant / f"precision-{args.model}"
    reference = work / "float32.duckdb"
    with store.connect(reference, read_only=True) as con:
        rows = con.sql(
            "SELECT frame_id, root || '/' || path FROM frames ORDER BY frame_id"
        ).fetchall()
        ids_ref, a = se.load_vectors(con, args.model)
    ids = np.array([i for i, _ in rows], dtype=np.int64)
    paths = [Path(p) for _, p in rows]
    spec = get_model(args.model)
    keras_f32 = spec.build(precision="float32")
    keras_bf16 = spec.build(precision="bfloat16")
    pick = np.linspace(0, len(paths) - 1, args.calibration).round().astype(int)
    calibration = []
    for i in pick:
        try:
            calibration.append(load_frame(paths[i], spec.input_size))
        except (FrameDecodeError, OSError):
            continue  # a file that changed since it was ingested
    started = time.perf_counter()
    blob = quantize(keras_f32, np.stack(calibration))
    convert_s = time.perf_counter() - started
    int8 = Int8Embedder(blob, keras_f32._preprocess, args.batch_size)

    db = work / "int8.duckdb"
    images_all, kept = [], []
    embedded = set(ids_ref.tolist())
    for frame_id, path in zip(ids, paths):
        if frame_id in embedded:
            images_all.append(load_frame(path, spec.input_size))
            kept.append(frame_id)
    images_all = np.stack(images_all)
    speed_s = {"float32": 0.0, "bfloat16": 0.0, "int8": 0.0}
    batch = images_all[: args.batch_size]
    for embedder in (keras_f32, keras_bf16, int8):
        embedder.embed(batch)  # warm-up
    for _ in range(2):
        for name, embedder in (("float32", keras_f32), ("bfloat16", keras_bf16), ("int8", int8)):
            t = time.perf_counter()
            embedder.embed(batch)
            speed_s[name] += time.perf_counter() - t
    speed = {name: round(2 * len(batch) / s, 2) for name, s in speed_s.items()}
    speed["int8_over_bfloat16"] = round(speed["int8"] / speed["bfloat16"], 2)

    started = time.perf_counter()
    c = np.concatenate(
        [
            int8.embed(images_all[i : i + args.batch_size])
            for i in range(0, len(images_all), args.batch_size)
        ]
    )
    embed_s = time.perf_counter() - started
    assert np.array_equal(np.array(kept), ids_ref)
    if not db.exists():
        shutil.copy(reference, db)
        with store.connect(db) as con:
            se.delete_model(con, args.model)
            se.record_model(
                con,
                se.ModelRow(
                    args.model, spec.family, "int8 (bench)", c.shape[1], spec.input_size, "int8"
                ),
            )
            se.insert_vectors(con, args.model, ids_ref, c, precision="int8")
        analyze(db, Settings(model=args.model), progress=False)
    report = {
        "model": args.model,
        "variant": args.variant,
        "frames": len(ids_ref),
        "convert_s": round(convert_s, 1),
        "embed_all_s": round(embed_s, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "speed_fps": speed,
        "vectors": vector_figures(a, c),
        "store": {
            **target_summary(detector_table(db, None))[args.model],
            "against_float32": compare(reference, db),
        },
        "float32_store": target_summary(detector_table(reference, None))[args.model],
    }
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
