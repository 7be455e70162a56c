"""The model zoo on Keras' JAX or PyTorch backend, in a process where TensorFlow cannot be imported.

`tests/test_without_tensorflow.py` runs it under `KERAS_BACKEND=jax` on files
and reference outputs it wrote with TensorFlow (`cases.json`, `expected.npz`
in CASES_DIR); it also runs by hand in a venv that has only keras, jax (or
torch), h5py and safetensors:

    KERAS_BACKEND=torch python tests/zoo_without_tensorflow.py CASES_DIR [TRAIN_DEPTH]

(TRAIN_DEPTH: the ImageNet net whose training step is checked, 18 by default.)

Each check prints `ok: <name>`; a format whose reader is not installed
(torchfile for `.t7`) prints `skipped: <name>`. Any failure exits non-zero.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import sys
import tempfile

BLOCKED = ("tensorflow", "tensorboard", "tf_keras", "tensorflow_datasets")
if __name__ == "__main__":  # never in a process that imports this file (pytest's collection)
    # As if not installed: `import tensorflow` raises ModuleNotFoundError and
    # importlib.util.find_spec("tensorflow") is None (what torch and keras probe).
    for _name in BLOCKED:
        sys.modules[_name] = None

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_preact as kp  # noqa: E402


def _close(got, expected, rtol=1e-4, atol=1e-4):
    got, expected = np.asarray(got), np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol * scale)


def check_foreign(cases, expected):
    """timm .safetensors, keras.applications .h5 and fb .t7 files give their nets' outputs."""
    for name, builder, path in (
        ("timm", kp.ResNet18V2, cases["timm"]),
        ("keras_h5", kp.ResNet50V2, cases["keras_h5"]),
        ("torch7", kp.ResNet18V2, cases["torch7"]),
    ):
        if name == "torch7" and importlib.util.find_spec("torchfile") is None:
            print(f"skipped: {name} (torchfile is not installed)")
            continue
        model = builder(weights=path, classifier_activation=None)
        images = expected["images224" if name == "torch7" else "images"]
        _close(model.predict(images, verbose=0), expected[name])
        if name == "timm":  # a feature extractor on the pyramid, as the docstring shows
            extractor = keras.Model(model.inputs, [model.output, model.pyramid_outputs])
            logits, taps = extractor.predict(images, verbose=0)
            _close(logits, expected[name])
            sizes = {level: tap.shape[1] for level, tap in taps.items()}
            assert sizes == {f"P{k}": 64 >> k for k in range(1, 6)}, sizes
        print(f"ok: {name} weights give the reference outputs ({model.layout.name} layout)")


def check_save_and_reload(cases, expected):
    """ResNet50V2: .weights.h5 and .keras round trips give identical outputs and config."""
    images = expected["images"]
    model = kp.ResNet50V2(weights=cases["keras_h5"])
    outputs = model.predict(images, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "r50.weights.h5")
        model.save_weights(weights)
        again = kp.ResNet50V2(layout="keras", weights=weights)
        np.testing.assert_array_equal(again.predict(images, verbose=0), outputs)
        path = os.path.join(folder, "r50.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is kp.ImageNetResNetV2, type(loaded)
        assert loaded.get_config() == model.get_config()
        np.testing.assert_array_equal(loaded.predict(images, verbose=0), outputs)
    print("ok: ResNet50V2 saved and reloaded (.weights.h5, .keras) with identical outputs")


def check_files_of_version_0_1(cases, expected):
    """.keras and .weights.h5 files written with TensorFlow by keras-preact 0.1.0."""
    folder = cases["v0_1_files"]
    images = np.load(os.path.join(folder, "inputs.npy"))
    name = "cifar8_full_preact"
    loaded = keras.models.load_model(os.path.join(folder, f"{name}.keras"))
    _close(loaded.predict(images, verbose=0), np.load(os.path.join(folder, f"{name}.outputs.npy")))
    name = "cifar11_relu_only_preact_gating"
    with open(os.path.join(folder, f"{name}.json")) as f:
        arguments = json.load(f)
    built = kp.CIFARResNetV2(**arguments, weights=os.path.join(folder, f"{name}.weights.h5"))
    _close(built.predict(images, verbose=0), np.load(os.path.join(folder, f"{name}.outputs.npy")))
    print("ok: files of keras-preact 0.1.0 load and give their outputs")


def _trained_one_step(depth, remat):
    """A ResNet{depth}V2 (seeded) after one compiled SGD step on 4 random images, and its
    weights before it."""
    keras.utils.set_random_seed(0)
    model = kp.ImageNetResNetV2(
        depth, input_shape=(32, 32, 3), classes=4, classifier_activation=None, remat=remat
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    history = model.fit(x, np.arange(4) % 4, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    return model, before


def check_train_step(cases, expected):
    """A compiled training step moves the weights and the BN statistics; with remat=True
    (`keras.remat` here) it moves them the same."""
    depth = int(cases.get("train_depth", 18))
    model, before = _trained_one_step(depth, remat=False)
    after = [keras.ops.convert_to_numpy(w) for w in model.weights]
    index = {id(w): i for i, w in enumerate(model.weights)}
    kernel = index[id(model.get_layer("stage1_unit1").conv1.kernel)]
    mean = index[id(model.get_layer("stage2_unit1").norm1.moving_mean)]
    assert not np.allclose(after[kernel], before[kernel]), "the step left the conv unchanged"
    assert not np.allclose(after[mean], before[mean]), "BN statistics did not move"
    rematerialised, _ = _trained_one_step(depth, remat=True)
    assert len(rematerialised.weights) == len(after)
    for weight, plain in zip(rematerialised.weights, after):
        _close(keras.ops.convert_to_numpy(weight), plain, rtol=5e-5, atol=5e-5)  # 6e-6 seen
    print(f"ok: a ResNet{depth}V2 training step, and with remat=True ({keras.backend.backend()})")


def check_preprocessing(cases, expected):
    pixels = np.linspace(0, 255, 2 * 2 * 2 * 3, dtype="float32").reshape(2, 2, 2, 3)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    _close(kp.preprocess_input(pixels, "torch"), (pixels - mean) / std, atol=1e-6)
    _close(kp.preprocess_input(keras.ops.convert_to_tensor(pixels), "tf"), pixels / 127.5 - 1)
    scores = np.zeros((1, 1000), "float32")
    scores[0, [1, 207]] = [0.25, 0.75]  # goldfish, golden retriever
    top = kp.decode_predictions(scores, top=2)[0]
    assert [(wnid, name) for wnid, name, _ in top] == [
        ("n02099601", "golden retriever"),
        ("n01443537", "goldfish"),
    ], top
    print("ok: preprocess_input and decode_predictions")


def check_tensorflow_parts_say_so(cases, expected):
    """data, training and export need TensorFlow, and say so in one line."""
    for part in ("keras_preact.data", "keras_preact.training", "keras_preact.export"):
        try:
            importlib.import_module(part)
        except ImportError as error:
            assert str(error).startswith(f"{part} needs TensorFlow"), error
            assert "\n" not in str(error), error
        else:
            raise AssertionError(f"{part} imported without TensorFlow")
    print("ok: data, training and export say in one line that they need TensorFlow")


def check_gpu_benchmark_smoke(cases, expected):
    """benchmarks/gpu_keras_backends.py --smoke prints its section (title, a row per model)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    spec = importlib.util.spec_from_file_location(
        "gpu_keras_backends", os.path.join(path, "gpu_keras_backends.py")
    )
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    # keras-preact alone (compiling a ResNet-50 step is most of the time); torch.compile
    # takes minutes on a CPU, so a hand-run torch check runs uncompiled.
    argv = ["--smoke", "--models=preact"]
    if keras.backend.backend() == "torch":
        argv.append("--no-compile")
    with contextlib.redirect_stdout(io.StringIO()) as out:
        benchmark.main(argv)
    lines = out.getvalue().splitlines()
    title = f"## ResNet-50 v2 on Keras' {keras.backend.backend()} backend"
    assert lines[0].startswith(title), lines[:1]
    row = [line for line in lines if line.startswith("| keras-preact `ResNet50V2`")]
    assert len(row) == 1, lines
    train, infer = (float(cell) for cell in row[0].split("|")[3:5])
    assert train > 0 and infer > 0, row
    print("ok: benchmarks/gpu_keras_backends.py --smoke prints its section")


CHECKS = (
    check_tensorflow_parts_say_so,
    check_preprocessing,
    check_foreign,
    check_save_and_reload,
    check_files_of_version_0_1,
    check_train_step,
    check_gpu_benchmark_smoke,
)


def main(cases_dir, train_depth=None):
    assert sys.modules.get("tensorflow") is None, "TensorFlow was imported"
    with open(os.path.join(cases_dir, "cases.json")) as f:
        cases = json.load(f)
    if train_depth:
        cases["train_depth"] = train_depth
    expected = dict(np.load(os.path.join(cases_dir, "expected.npz")))
    for check in CHECKS:
        check(cases, expected)
    assert sys.modules.get("tensorflow") is None, "TensorFlow was imported"
    print(f"all checks passed on {keras.backend.backend()} without TensorFlow")


if __name__ == "__main__":
    main(*sys.argv[1:])
