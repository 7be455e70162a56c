"""The SavedModel for TF Serving: fresh-process loading, saved_model_cli, bad input,
warm-up, versions and atomic publishing, mixed precision under a strategy.

Fixtures (`photos`, `trained`, `exported`): conftest.py.
"""

import io
import json
import os
import subprocess
import sys
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import (
    NAMES,
    REPO,
    keras_reference,
    run_command,
    subprocess_env,
    tiny_model,
    tree_digest,
)

from keras_preact.data.crops import decode_image, eval_crop
from keras_preact.export import saved_model as saved_model_lib
from keras_preact.export import verify as verify_lib
from keras_preact.export.pipeline import export_all
from keras_preact.export.verify import sample_images
from keras_preact.models.float32 import float32_copy, policy_copy

# ----------------------------------------------------------------------------- SavedModel

_FRESH = r"""
import sys
import numpy as np
import tensorflow as tf

data = np.load(sys.argv[2])
blob, offsets = data["blob"].tobytes(), data["offsets"]
images = [blob[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
signatures = tf.saved_model.load(sys.argv[1]).signatures
out = signatures["serving_default"](image_bytes=tf.constant(images))
pixels = signatures["pixels"](pixels=tf.constant(data["odd"]))
pixels8 = signatures["pixels_uint8"](pixels=tf.constant(data["odd8"]))
np.savez(
    sys.argv[3],
    probabilities=out["probabilities"].numpy(),
    classes=out["classes"].numpy(),
    scores=out["scores"].numpy(),
    labels=out["labels"].numpy().astype(bytes),
    odd=pixels["probabilities"].numpy(),
    odd8=pixels8["probabilities"].numpy(),
    imported=np.array(sorted(m for m in sys.modules if m.split(".")[0] in ("keras_preact", "export"))),
)
"""


def test_fresh_process_loads_and_matches_keras(exported, trained, photos, tmp_path):
    reference = keras_reference(trained)
    _, model, _ = trained
    rng = np.random.default_rng(0)
    odd = rng.uniform(0, 255, (2, 97, 131, 3)).astype(np.float32)  # any H/W for pixels
    odd8 = rng.integers(0, 256, (2, 150, 64, 3)).astype(np.uint8)
    encoded = [data for _, data in photos]
    offsets = np.cumsum([0] + [len(b) for b in encoded])
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    blob = np.frombuffer(b"".join(encoded), np.uint8)
    np.savez(inputs, blob=blob, offsets=offsets, odd=odd, odd8=odd8)

    run_command(
        [sys.executable, "-I", "-c", _FRESH, exported.saved_model_dir, str(inputs), str(outputs)]
    )
    out = np.load(outputs)

    assert out["imported"].size == 0, f"the serving process imported {out['imported']}"
    np.testing.assert_allclose(out["probabilities"], reference, rtol=0, atol=1e-5)
    expected_classes = np.argsort(-reference, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(out["classes"], expected_classes)
    np.testing.assert_allclose(
        out["scores"], np.take_along_axis(reference, expected_classes, 1), atol=1e-5
    )
    labels = np.vectorize(lambda b: b.decode())(out["labels"])
    np.testing.assert_array_equal(labels, NAMES[expected_classes])
    np.testing.assert_allclose(out["odd"], model(odd), atol=1e-5)
    np.testing.assert_allclose(out["odd8"], model(odd8.astype(np.float32)), atol=1e-5)
    # The export's own check (another fresh process) agrees.
    report = exported.saved_model_report
    assert report["passed"] and not report["fresh_process"]["imported_keras_preact"]


def test_saved_model_cli_run_jpeg_png(exported, trained, photos, tmp_path):
    reference = keras_reference(trained)
    chosen = [i for i, (name, _) in enumerate(photos) if name.endswith((".jpg", ".png", ".gif"))]
    assert {photos[i][0][-3:] for i in chosen} == {"jpg", "png", "gif"}
    npy = tmp_path / "image_bytes.npy"
    np.save(npy, np.array([photos[i][1] for i in chosen]))  # fixed-width bytes, no pickle
    command = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    run_command(
        command
        + ["run", "--dir", exported.saved_model_dir, "--tag_set", "serve"]
        + ["--signature_def", "serving_default", "--inputs", f"image_bytes={npy}"]
        + ["--outdir", str(tmp_path / "out")]
    )
    probabilities = np.load(tmp_path / "out" / "probabilities.npy")
    labels = np.load(tmp_path / "out" / "labels.npy", allow_pickle=True)
    np.testing.assert_allclose(probabilities, reference[chosen], rtol=0, atol=1e-5)
    top = np.argsort(-reference[chosen], axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(np.vectorize(lambda b: b.decode())(labels), NAMES[top])


def _signature_blocks(text):
    blocks = {}
    for part in text.split("signature_def['")[1:]:
        name, body = part.split("']", 1)
        blocks[name] = body
    return blocks


def _tensor(body, kind, key):
    """(dtype, shape) of inputs[...] / outputs[...] in `saved_model_cli show` text."""
    section = body.split(f"{kind}['{key}'] tensor_info:")[1]
    dtype = section.split("dtype: ")[1].split()[0]
    shape = section.split("shape: ")[1].split("\n")[0].strip()
    return dtype, shape


def test_saved_model_cli_show_lists_signatures(exported):
    command = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    text = run_command(command + ["show", "--all", "--dir", exported.saved_model_dir]).stdout
    blocks = _signature_blocks(text)
    assert {"serving_default", "pixels", "pixels_uint8"} <= set(blocks)
    assert _tensor(blocks["serving_default"], "inputs", "image_bytes") == ("DT_STRING", "(-1)")
    assert _tensor(blocks["pixels"], "inputs", "pixels") == ("DT_FLOAT", "(-1, -1, -1, 3)")
    assert _tensor(blocks["pixels_uint8"], "inputs", "pixels") == ("DT_UINT8", "(-1, -1, -1, 3)")
    for name in ("serving_default", "pixels", "pixels_uint8"):
        body = blocks[name]
        assert body.count("inputs['") == 1
        assert _tensor(body, "outputs", "probabilities") == ("DT_FLOAT", "(-1, 1000)")
        assert _tensor(body, "outputs", "classes") == ("DT_INT64", "(-1, 5)")
        assert _tensor(body, "outputs", "scores") == ("DT_FLOAT", "(-1, 5)")
        assert _tensor(body, "outputs", "labels") == ("DT_STRING", "(-1, 5)")
        assert "Method name is: tensorflow/serving/predict" in body


def test_bad_images_fail_their_request_only(exported, photos):
    serve = tf.saved_model.load(exported.saved_model_dir).signatures["serving_default"]
    by_name = dict(photos)
    jpeg, png = by_name["china.jpg"], by_name["chelsea.png"]
    good = tf.constant([jpeg, png])
    before = serve(image_bytes=good)["probabilities"].numpy()
    bad_batches = {
        "garbage": b"definitely not an image",
        "jpeg without end marker": jpeg[:-2],
        "jpeg cut in half": jpeg[: len(jpeg) // 2],
        "png cut in half": png[: len(png) // 2],
        "empty": b"",
        # Bytes that are not UTF-8 once reached the error message raw (a UnicodeDecodeError).
        "random bytes": np.random.default_rng(0).bytes(500),
        "non-utf8 lead": b"\x8a\xff\x00\x80" + b"x" * 40,
    }
    for what, bad in bad_batches.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            serve(image_bytes=tf.constant([jpeg, bad]))
        if what in ("garbage", "empty", "random bytes", "non-utf8 lead"):
            assert "image_bytes[1] is not a JPEG, PNG, GIF or BMP image" in info.value.message
        if what == "non-utf8 lead":
            assert "8a ff 00 80 78 78 78 78" in info.value.message
        # The same loaded model still answers, with the same numbers.
        np.testing.assert_array_equal(serve(image_bytes=good)["probabilities"].numpy(), before)


def test_tf_serving_warmup_file_replays_on_the_model(exported, trained):
    """assets.extra/tf_serving_warmup_requests holds PredictionLogs TF Serving can replay."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(exported.saved_model_dir, "assets.extra", "tf_serving_warmup_requests")
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    assert len(records) == 1
    request = prediction_log_pb2.PredictionLog.FromString(records[0]).predict_log.request
    assert request.model_spec.name == "tiny"
    assert request.model_spec.signature_name == "serving_default"
    assert list(request.inputs) == ["image_bytes"]
    images = tf.make_ndarray(request.inputs["image_bytes"])
    serve = tf.saved_model.load(exported.saved_model_dir).signatures["serving_default"]
    probabilities = serve(image_bytes=tf.constant(images))["probabilities"].numpy()
    assert probabilities.shape == (1, 1000)
    # The Keras model's answer on the same image, decoded and eval-cropped here.
    _, model, _ = trained
    crop = eval_crop(decode_image(images[0]), 224).numpy()[None]
    expected = np.asarray(model(crop, training=False))
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    assert probabilities.argmax() == expected.argmax() and expected.max() > 2 / 1000


def test_in_graph_crop_is_eval_crop(photos):
    from PIL import Image

    encoded = tf.constant([data for _, data in photos])
    for crop in (224, 320):
        graph = tf.function(lambda b, c=crop: saved_model_lib.decode_and_crop(b, c))(encoded)
        eager = np.stack([eval_crop(decode_image(d), crop).numpy() for _, d in photos])
        np.testing.assert_array_equal(graph.numpy(), eager)
    # The decode itself against an independent decoder (PNG is lossless).
    png = dict(photos)["astronaut.png"]
    expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(decode_image(png).numpy(), expected)


def _randomized_statistics(model, seed=0):
    """A float32 copy of `model` whose BN moving statistics are random (so a variant
    that drops or misreads them serves something else)."""
    copy = float32_copy(model)
    rng = np.random.default_rng(seed)
    for layer in copy.layers:
        for weight in layer.weights:
            if "moving_mean" in weight.path:
                weight.assign(rng.normal(0.0, 0.2, weight.shape))
            elif "moving_variance" in weight.path:
                weight.assign(rng.uniform(0.5, 2.0, weight.shape))
    return copy


def test_serving_variants_match_the_plain_signatures(trained, photos, tmp_path):
    """`build_archive`'s speed options serve what the plain export serves, in every signature:
    `jit_compile` (one XLA cluster) and `frozen_weights` (weights as constants, no variables)
    to float32 rounding; `precision="bfloat16"` within its tolerance, and not bit-equal
    (it does compute in bfloat16)."""
    _, model, crops = trained
    model = _randomized_statistics(model)
    labels = [f"c{i}" for i in range(model.outputs[0].shape[-1])]
    images = tf.constant([d for _, d in photos[:2]])
    variants = {
        "plain": {},
        "jit": {"jit_compile": True},
        "frozen": {"frozen_weights": True},
        "bfloat16": {"precision": "bfloat16"},
    }
    served, variables = {}, {}
    for name, options in variants.items():
        archive = saved_model_lib.build_archive(model, labels, 224, **options)
        directory = str(tmp_path / name)
        saved_model_lib.write_saved_model(archive, directory, labels)
        loaded = tf.saved_model.load(directory)
        variables[name] = len(loaded.variables)
        signatures = loaded.signatures
        served[name] = (
            signatures["pixels"](pixels=tf.constant(crops[:3])),
            signatures["pixels_uint8"](pixels=tf.constant(crops[:2].astype(np.uint8))),
            signatures["serving_default"](image_bytes=images),
        )
    assert variables["plain"] > 0 and variables["frozen"] == variables["bfloat16"] == 0
    for name, atol in (("jit", 1e-6), ("frozen", 1e-6)):
        for plain, variant in zip(served["plain"], served[name]):
            np.testing.assert_allclose(variant["probabilities"], plain["probabilities"], atol=atol)
            np.testing.assert_array_equal(variant["classes"][:, 0], plain["classes"][:, 0])
            np.testing.assert_array_equal(variant["labels"][:, 0], plain["labels"][:, 0])
    np.testing.assert_allclose(served["frozen"][0]["probabilities"], model(crops[:3]), atol=1e-5)
    for plain, half in zip(served["plain"], served["bfloat16"]):
        delta = np.abs(half["probabilities"].numpy() - plain["probabilities"].numpy()).max()
        assert 0.0 < delta <= verify_lib.BFLOAT16_TOLERANCE
    with pytest.raises(ValueError, match="precision must be one of"):
        saved_model_lib.build_archive(model, labels, 224, precision="float16")
    with pytest.raises(ValueError, match="Choose jit_compile or frozen_weights"):
        saved_model_lib.build_archive(model, labels, 224, jit_compile=True, frozen_weights=True)
    with pytest.raises(ValueError, match="Choose jit_compile or frozen_weights"):
        saved_model_lib.build_archive(
            model, labels, 224, precision="bfloat16", jit_compile=True, frozen_weights=True
        )
    small = sum(int(np.prod(w.shape)) * 4 for w in model.weights) - 1
    with mock.patch.object(saved_model_lib, "MAX_FROZEN_BYTES", small):
        with pytest.raises(ValueError, match="GiB this export freezes into a graph"):
            saved_model_lib.build_archive(model, labels, 224, frozen_weights=True)


def test_bfloat16_copy_of_a_plain_functional_model_keeps_a_float32_classifier():
    """A model that is not a keras-preact class (a .keras file of a plain functional model) is
    cloned layer by layer: its convolutions compute in bfloat16, its classifier in float32."""
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    copy = policy_copy(keras.Model(inputs, outputs), "mixed_bfloat16")
    policies = {layer.name: layer.dtype_policy.name for layer in copy.layers[1:]}
    assert policies.pop("predictions") == "float32"
    assert set(policies.values()) == {"mixed_bfloat16"}
    assert copy(np.zeros([1, 8, 8, 3], np.float32)).dtype == "float32"


def test_bfloat16_export_is_verified_to_its_tolerance(trained, photos, tmp_path):
    """`export_all(saved_model_precision="bfloat16")`: verified in a fresh process against the
    float32 Keras model to `BFLOAT16_TOLERANCE`, and the report says what was exported."""
    path, _, _ = trained
    result = export_all(
        str(path),
        str(tmp_path),
        model_name="half",
        images=photos[:4],
        tflite=(),
        saved_model_cli=False,
        saved_model_precision="bfloat16",
    )
    report = result.saved_model_report
    assert report["passed"] and report["tolerance"] == verify_lib.BFLOAT16_TOLERANCE
    assert report["precision"] == "bfloat16" and report["frozen_weights"]
    assert f"SavedModel (bfloat16)   {result.saved_model_dir}" in result.summary()
    fresh = report["fresh_process"]["checks"]["serving_default"]
    assert 0.0 < fresh["max_abs_diff"] <= verify_lib.BFLOAT16_TOLERANCE
    with pytest.raises(ValueError, match="Unknown saved_model_precision 'half'"):
        export_all(str(path), str(tmp_path), saved_model_precision="half")


# ------------------------------------------------------------------- versions and atomicity


def test_existing_version_is_refused_and_left_untouched(trained, tmp_path):
    path, model, _ = trained
    common = dict(model_name="v", tflite=[], verify=False, images=sample_images()[:1])
    first = export_all(model, str(tmp_path), **common)
    second = export_all(model, str(tmp_path), **common)
    assert (first.version, second.version) == (1, 2)
    base = tmp_path / "v"
    before = tree_digest(base / "1")
    with pytest.raises(FileExistsError, match="Version 1 already exists"):
        export_all(model, str(tmp_path), version=1, **common)
    assert tree_digest(base / "1") == before
    assert sorted(os.listdir(base)) == ["1", "2"]

    other = tiny_model(seed=7)
    replaced = export_all(other, str(tmp_path), version=1, overwrite=True, **common)
    assert replaced.version == 1 and sorted(os.listdir(base)) == ["1", "2"]
    x = np.random.default_rng(1).uniform(0, 255, (1, 40, 40, 3)).astype(np.float32)
    served = tf.saved_model.load(str(base / "1")).signatures["pixels"](pixels=tf.constant(x))
    np.testing.assert_allclose(served["probabilities"], other(x), atol=1e-5)
    assert np.abs(np.asarray(other(x)) - np.asarray(model(x))).max() > 1e-4


def test_kill_during_export_leaves_no_partial_version(trained, tmp_path):
    path, _, _ = trained
    base = tmp_path / "k"
    command = [sys.executable, "-m", "export", f"--model_path={path}"]
    command += [f"--output_dir={tmp_path}", "--model_name=k", "--tflite=", "--noverify"]
    proc = subprocess.Popen(
        command, env=subprocess_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline, temporary = time.monotonic() + 180, None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            names = os.listdir(base) if base.is_dir() else []
            temporary = next((n for n in names if n.startswith(".tmp-")), None)
            if temporary:
                break
            time.sleep(0.005)
        assert temporary and proc.poll() is None, proc.stderr.read().decode()[-3000:]
        proc.kill()  # SIGKILL while the version is being written
    finally:
        proc.kill()
        proc.wait()
    assert saved_model_lib.versions(base) == []
    assert os.listdir(base) == [temporary]
    # The next export removes the dead process's temporary and writes version 1.
    result = export_all(str(path), str(tmp_path), model_name="k", tflite=[], verify=False)
    assert result.version == 1 and os.listdir(base) == ["1"]


def test_cli_rejects_bad_arguments(tmp_path):
    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(b"")
    proc = run_command(
        [sys.executable, "-m", "export", f"--model_path={weights}", f"--output_dir={tmp_path}"],
        check=False,
    )
    assert proc.returncode != 0
    assert "--builder" in proc.stderr and "not a .keras file" in proc.stderr
    assert not (tmp_path / "preact").exists()


# ------------------------------------------------------- mixed precision under a strategy

_MIXED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import keras_preact
from keras_preact.export.pipeline import export_all
from keras_preact.export.verify import eval_crops, sample_images

keras.mixed_precision.set_global_policy("mixed_float16")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
images = sample_images()[:4]  # 2 per replica
with strategy.scope():
    model = keras_preact.CIFARResNetV2(depth=8, width=8, classes=10, input_shape=(32, 32, 3))
    for layer in model.layers:  # head only: avoids TF 2.21's oneDNN strided-1x1 gradient crash
        layer.trainable = layer.name == "predictions"
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    x = eval_crops(images, 32, 32)
    model.fit(x, np.arange(4), epochs=2, batch_size=4, verbose=0)
    result = export_all(model, sys.argv[1], model_name="mixed", tflite=["float32"],
                        images=images, saved_model_cli=False)
mixed = np.asarray(model.predict(x, verbose=0), np.float32)
served = tf.saved_model.load(result.saved_model_dir).signatures["serving_default"](
    image_bytes=tf.constant([d for _, d in images]))["probabilities"].numpy()
print(json.dumps({
    "variable_types": sorted({type(v.value).__name__ for v in model.weights}),
    "compute_dtype": model.compute_dtype,
    "saved_model_passed": result.saved_model_report["passed"],
    "tflite_passed": result.tflite_reports["float32"]["passed"],
    "mixed_vs_served": float(np.abs(mixed - served).max()),
    "crop_size": result.crop_size,
}))
"""


def test_mixed_precision_model_under_strategy_exports_float32(tmp_path):
    proc = run_command([sys.executable, "-c", _MIXED, str(tmp_path)], timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["variable_types"] == ["MirroredVariable"] and out["compute_dtype"] == "float16"
    assert out["saved_model_passed"] and out["tflite_passed"] and out["crop_size"] == 32
    # The float32 copy differs from the float16 computation by rounding only.
    assert out["mixed_vs_served"] < 1e-2
