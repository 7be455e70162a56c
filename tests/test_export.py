"""export/: SavedModel for TF Serving, TFLite, ONNX, the serving client, versioning and bad input.

One tiny classifier (CIFAR-style ResNet-8, width 8, 1,000 classes, any H/W) has
its classifier briefly fitted so outputs are peaked (top-1 comparisons mean something),
saved as `.keras` and exported once for the module. References are the Keras
model reloaded from that file, run on `eval_crop` crops of real photos that
scikit-learn and scikit-image ship (JPEG, PNG, GIF, plus a BMP made here).
"""

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_preact
from keras_preact.export import model as model_lib
from keras_preact.export import onnx_export
from keras_preact.export import saved_model as saved_model_lib
from keras_preact.export.pipeline import export_all
from keras_preact.export import client
from keras_preact.export.verify import VerificationError, eval_crops, sample_images
from keras_preact.data.crops import decode_image, eval_crop
from keras_preact.preprocessing import imagenet_classes

REPO = Path(__file__).resolve().parents[1]
NAMES = np.array([name for _, name in imagenet_classes()], dtype=object)


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(command, timeout=240, check=True):
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{command[:4]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def _tree_digest(root):
    """{relative path: sha256} of every file under root."""
    digest = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def _tiny_model(classes=1000, seed=0):
    keras.utils.set_random_seed(seed)
    return keras_preact.CIFARResNetV2(
        depth=8, width=8, classes=classes, input_shape=(None, None, 3), normalization="torch"
    )


@pytest.fixture(scope="module")
def photos():
    from PIL import Image

    images = sample_images()
    assert len(images) >= 10, "scikit-learn/scikit-image sample photos are missing"
    png = dict(images)["chelsea.png"]
    bmp = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(bmp, "BMP")
    return images + [("chelsea.bmp", bmp.getvalue())]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, photos):
    """(model.keras path, reloaded Keras model, eval crops of the photos)."""
    model = _tiny_model()
    crops = eval_crops(photos, 224)
    # Only the classifier is fitted (each photo to its own class), so outputs are
    # peaked and varied. Training the convolutions here would hit a TF 2.21 oneDNN
    # crash (filter gradient of a strided 1x1 conv; see the export report).
    for layer in model.layers:
        layer.trainable = layer.name == "predictions"
    targets = (np.arange(len(crops)) * 73) % 1000
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit(crops, targets, epochs=60, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("run") / "model.keras"
    model.save(path)
    return path, keras.models.load_model(path, compile=False), crops


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained, photos):
    path, _, _ = trained
    out = tmp_path_factory.mktemp("exported")
    return export_all(
        str(path), str(out), model_name="tiny", images=photos, onnx=onnx_export.available()
    )


def _reference(trained):
    _, model, crops = trained
    return np.asarray(model(crops, training=False))


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
    reference = _reference(trained)
    _, model, _ = trained
    rng = np.random.default_rng(0)
    odd = rng.uniform(0, 255, (2, 97, 131, 3)).astype(np.float32)  # any H/W for pixels
    odd8 = rng.integers(0, 256, (2, 150, 64, 3)).astype(np.uint8)
    encoded = [data for _, data in photos]
    offsets = np.cumsum([0] + [len(b) for b in encoded])
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    blob = np.frombuffer(b"".join(encoded), np.uint8)
    np.savez(inputs, blob=blob, offsets=offsets, odd=odd, odd8=odd8)

    _run([sys.executable, "-I", "-c", _FRESH, exported.saved_model_dir, str(inputs), str(outputs)])
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
    reference = _reference(trained)
    chosen = [i for i, (name, _) in enumerate(photos) if name.endswith((".jpg", ".png", ".gif"))]
    assert {photos[i][0][-3:] for i in chosen} == {"jpg", "png", "gif"}
    npy = tmp_path / "image_bytes.npy"
    np.save(npy, np.array([photos[i][1] for i in chosen]))  # fixed-width bytes, no pickle
    command = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    _run(
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
    text = _run(command + ["show", "--all", "--dir", exported.saved_model_dir]).stdout
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
    }
    for what, bad in bad_batches.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            serve(image_bytes=tf.constant([jpeg, bad]))
        if what in ("garbage", "empty"):
            assert "image_bytes[1] is not a JPEG, PNG, GIF or BMP image" in info.value.message
        # The same loaded model still answers, with the same numbers.
        np.testing.assert_array_equal(serve(image_bytes=good)["probabilities"].numpy(), before)


def test_tf_serving_warmup_file_replays_on_the_model(exported):
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
    np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)


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


# ---------------------------------------------------------------------------------- TFLite


def _litert(path, crops):
    """Runs a .tflite file on float32 crops with ai-edge-litert, independently of export.tflite."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for crop in crops:
        x = crop[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), 0, 255).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y)
    return np.stack(results), inp, out


def test_tflite_variants_agree_with_keras(exported, trained):
    reference = _reference(trained)
    _, _, crops = trained
    assert set(exported.tflite) == {"float32", "float16", "dynamic_int8", "int8"}
    top1 = reference.argmax(1)
    figures = {}
    for variant, path in exported.tflite.items():
        probabilities, inp, out = _litert(path, crops)
        delta = float(np.abs(probabilities - reference).max())
        agreement = float((probabilities.argmax(1) == top1).mean())
        figures[variant] = (delta, agreement)
        report_path = path[: -len(".tflite")] + ".verification.json"
        with open(report_path) as f:
            report = json.load(f)
        assert report == exported.tflite_reports[variant]
        assert report["size_bytes"] == os.path.getsize(path)
        assert report["checks"]["images"] == len(crops)
        assert report["checks"]["max_abs_diff"] == pytest.approx(delta, abs=1e-6)
        assert report["checks"]["top1_agreement"] == pytest.approx(agreement)
        assert report["latency_batch1"]["median_ms"] > 0
        if variant == "int8":
            assert (inp["dtype"], out["dtype"]) == (np.uint8, np.uint8)
            assert inp["quantization"] == (1.0, 0)  # raw pixel values go in unchanged
    assert figures["float32"][0] <= 1e-4 and figures["float32"][1] == 1.0
    assert exported.tflite_reports["float32"]["passed"]
    assert figures["float16"][1] >= 0.99
    # int8 sanity floor: a broken quantization (wrong input scale, saturated
    # output) lands at chance (1/1000) top-1 and O(1) deltas. The floor leaves
    # room for the full-integer error of a 20k-parameter net calibrated on 15 images.
    assert figures["int8"][1] >= 0.5 and figures["int8"][0] <= 0.35
    assert figures["dynamic_int8"][1] >= 0.5


def test_float32_disagreement_fails_export(trained, photos, tmp_path):
    path, _, _ = trained
    # XNNPACK sums in another order than TF, so float32 TFLite is never bit-identical
    # to Keras on these photos; a 1e-15 tolerance must therefore reject the file.
    with pytest.raises(VerificationError, match="TFLite float32 disagrees"):
        export_all(
            str(path),
            str(tmp_path),
            model_name="strict",
            saved_model=False,
            tflite=["float32"],
            images=photos[:3],
            float32_tolerance=1e-15,
        )
    base = tmp_path / "tflite" / "strict"
    assert os.listdir(base) == []  # nothing published, temporary removed


def test_representative_data_from_a_pipeline(photos):
    from keras_preact.export.tflite import representative_images

    images = [decode_image(d).numpy() for _, d in photos[:3]]
    small = np.stack([tf.image.resize(i, (40, 48)).numpy() for i in images])
    dataset = tf.data.Dataset.from_tensor_slices((small, np.arange(3))).batch(2)
    got = representative_images(dataset, crop_size=32, limit=3)
    expected = np.stack([eval_crop(i, 32).numpy() for i in small])
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------- versions and atomicity


def test_existing_version_is_refused_and_left_untouched(trained, tmp_path):
    path, model, _ = trained
    common = dict(model_name="v", tflite=[], verify=False, images=sample_images()[:1])
    first = export_all(model, str(tmp_path), **common)
    second = export_all(model, str(tmp_path), **common)
    assert (first.version, second.version) == (1, 2)
    base = tmp_path / "v"
    before = _tree_digest(base / "1")
    with pytest.raises(FileExistsError, match="Version 1 already exists"):
        export_all(model, str(tmp_path), version=1, **common)
    assert _tree_digest(base / "1") == before
    assert sorted(os.listdir(base)) == ["1", "2"]

    other = _tiny_model(seed=7)
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
        command, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
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
    proc = _run(
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
    proc = _run([sys.executable, "-c", _MIXED, str(tmp_path)], timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["variable_types"] == ["MirroredVariable"] and out["compute_dtype"] == "float16"
    assert out["saved_model_passed"] and out["tflite_passed"] and out["crop_size"] == 32
    # The float32 copy differs from the float16 computation by rounding only.
    assert out["mixed_vs_served"] < 1e-2


# ------------------------------------------------------------------------ serving client


def test_rest_request_matches_tf_serving_format(photos):
    images = [photos[0][1], photos[2][1]]
    body = json.loads(json.dumps(client.rest_request(images)))
    # TF Serving REST predict, row format: {"signature_name": ..., "instances": [...]};
    # a binary value is an object with a single "b64" key holding standard base64.
    assert set(body) == {"signature_name", "instances"}
    assert body["signature_name"] == "serving_default"
    assert isinstance(body["instances"], list) and len(body["instances"]) == 2
    for instance, data in zip(body["instances"], images):
        assert set(instance) == {"b64"}
        assert base64.b64decode(instance["b64"], validate=True) == data
    assert client.rest_url("localhost:8501", "tiny") == (
        "http://localhost:8501/v1/models/tiny:predict"
    )
    assert client.rest_url("http://h:1/", "tiny", version=3) == (
        "http://h:1/v1/models/tiny/versions/3:predict"
    )


def test_grpc_request_matches_tf_serving_format(photos, exported):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    images = [photos[0][1], photos[2][1]]
    request = client.grpc_request(images, "tiny", version=4)
    assert isinstance(request, predict_pb2.PredictRequest)
    assert request.model_spec.name == "tiny"
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 4
    assert list(request.inputs) == ["image_bytes"]
    proto = request.inputs["image_bytes"]
    assert proto.dtype == types_pb2.DT_STRING
    assert [d.size for d in proto.tensor_shape.dim] == [2]
    assert list(proto.string_val) == images
    assert list(tf.make_ndarray(proto)) == images
    assert predict_pb2.PredictRequest.FromString(request.SerializeToString()) == request
    # The input key and dtype are the served signature's.
    loaded = tf.saved_model.load(exported.saved_model_dir)
    spec = loaded.signatures["serving_default"].structured_input_signature[1]
    assert list(spec) == ["image_bytes"] and spec["image_bytes"].dtype == tf.string


class _Serving:
    """A stand-in for TF Serving on 127.0.0.1 (REST and gRPC) running the exported SavedModel.

    It follows the documented request/response formats, so the client's networking
    and parsing are exercised end to end; the SavedModel itself is the real one.
    """

    def __init__(self, version_dir, model_name):
        self.signatures = tf.saved_model.load(version_dir).signatures
        self.model_name = model_name

    def predict(self, signature, images):
        outputs = self.signatures[signature](image_bytes=tf.constant(images))
        return {k: v.numpy() for k, v in outputs.items()}

    def start_rest(self):
        serving = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                assert self.path == f"/v1/models/{serving.model_name}:predict", self.path
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                images = [base64.b64decode(i["b64"]) for i in body["instances"]]
                try:
                    out = serving.predict(body.get("signature_name", "serving_default"), images)
                    code, answer = 200, {"predictions": _rows(out)}
                except tf.errors.InvalidArgumentError as e:
                    code, answer = 400, {"error": e.message}
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return f"127.0.0.1:{self.http.server_address[1]}"

    def start_grpc(self):
        from concurrent import futures

        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        serving = self

        class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):
                assert request.model_spec.name == serving.model_name
                images = list(tf.make_ndarray(request.inputs["image_bytes"]))
                out = serving.predict(request.model_spec.signature_name, images)
                response = predict_pb2.PredictResponse()
                for key, value in out.items():
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
                return response

        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), self.grpc)
        port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()
        return f"127.0.0.1:{port}"

    def stop(self):
        if hasattr(self, "http"):
            self.http.shutdown()
        if hasattr(self, "grpc"):
            self.grpc.stop(None)


def _rows(outputs):
    count = len(next(iter(outputs.values())))
    rows = []
    for i in range(count):
        row = {}
        for key, value in outputs.items():
            item = value[i]
            row[key] = [v.decode() for v in item] if item.dtype == object else item.tolist()
        rows.append(row)
    return rows


def test_client_round_trip_rest_and_grpc(exported, trained, photos, tmp_path):
    reference = _reference(trained)
    chosen = [0, 2, len(photos) - 1]  # JPEG, PNG, BMP
    files = []
    for i in chosen:
        path = tmp_path / photos[i][0]
        path.write_bytes(photos[i][1])
        files.append(str(path))
    serving = _Serving(exported.saved_model_dir, "tiny")
    try:
        rest = serving.start_rest()
        proc = _run(
            [sys.executable, "-m", "keras_preact.export.client", f"--server={rest}"]
            + ["--model_name=tiny", "--top_k=3", *files]
        )
        lines = proc.stdout.splitlines()
        for n, i in enumerate(chosen):
            assert lines[4 * n] == files[n]
            best = int(reference[i].argmax())
            assert lines[4 * n + 1].endswith(f"  {NAMES[best]} ({best})")
            assert float(lines[4 * n + 1].split()[0]) == pytest.approx(reference[i, best], abs=1e-4)
        bad = tmp_path / "notes.jpg"
        bad.write_bytes(b"not an image at all")
        proc = _run(
            [sys.executable, "-m", "keras_preact.export.client", f"--server={rest}"]
            + ["--model_name=tiny", files[0], str(bad)],
            check=False,
        )
        assert proc.returncode != 0 and "is not a JPEG, PNG, GIF or BMP image" in proc.stderr

        grpc_server = serving.start_grpc()
        images = [photos[i][1] for i in chosen]
        answers = client.predict_grpc(grpc_server, "tiny", images)
        for answer, i in zip(answers, chosen):
            np.testing.assert_allclose(answer["probabilities"], reference[i], atol=1e-5)
            top = np.argsort(-reference[i], kind="stable")[:5]
            assert answer["classes"] == top.tolist()
            assert answer["labels"] == NAMES[top].tolist()
    finally:
        serving.stop()


def test_models_config_parses():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = (REPO / "docs" / "serving" / "models.config").read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == (
        "preact",
        "/models/preact",
        "tensorflow",
    )


# ---------------------------------------------------------------------------- labels, ONNX


def test_labels_resolution(tmp_path):
    model_file = tmp_path / "model.keras"
    assert model_lib.resolve_labels(3, model_path=str(model_file)) == (
        ["0", "1", "2"],
        "class indices",
    )
    assert model_lib.resolve_labels(1000)[0][1] == "goldfish"
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n\n")
    assert model_lib.resolve_labels(3, model_path=str(model_file))[0] == ["cat", "dog", "bird"]
    other = tmp_path / "other.txt"
    other.write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 class names but the model has 3"):
        model_lib.resolve_labels(3, labels_file=str(other))
    with pytest.raises(FileNotFoundError):
        model_lib.resolve_labels(3, labels_file=str(tmp_path / "missing.txt"))


@pytest.mark.skipif(not onnx_export.available(), reason="the onnx extra is not installed")
def test_onnx_matches_keras(exported, trained):
    import onnxruntime

    _, model, crops = trained
    assert exported.onnx_report["passed"]
    session = onnxruntime.InferenceSession(exported.onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    odd = np.random.default_rng(2).uniform(0, 255, (2, 72, 56, 3)).astype(np.float32)
    for x in (crops[:4], odd):
        (got,) = session.run(["probabilities"], {"image": x})
        np.testing.assert_allclose(got, model(x), rtol=0, atol=1e-5)
