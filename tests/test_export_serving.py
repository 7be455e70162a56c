"""The serving client (REST and gRPC against stand-in servers speaking TF Serving's
formats), the models.config example and class-name resolution.
"""

import base64
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import NAMES, REPO, keras_reference, run_command

from keras_preact.export import client
from keras_preact.export import model as model_lib

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
                try:
                    out = serving.predict(request.model_spec.signature_name, images)
                except tf.errors.InvalidArgumentError as e:  # as TF Serving answers it
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
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
    reference = keras_reference(trained)
    chosen = [0, 2, len(photos) - 1]  # JPEG, PNG, BMP
    files = []
    for i in chosen:
        path = tmp_path / photos[i][0]
        path.write_bytes(photos[i][1])
        files.append(str(path))
    serving = _Serving(exported.saved_model_dir, "tiny")
    try:
        rest = serving.start_rest()
        proc = run_command(
            [sys.executable, "-m", "keras_preact.export.client", f"--server={rest}"]
            + ["--model_name=tiny", "--top_k=3", *files]
        )
        lines = proc.stdout.splitlines()
        for n, i in enumerate(chosen):
            assert lines[4 * n] == files[n]
            best = int(reference[i].argmax())
            assert lines[4 * n + 1].endswith(f"  {NAMES[best]} ({best})")
            assert float(lines[4 * n + 1].split()[0]) == pytest.approx(reference[i, best], abs=1e-4)
        # A query holding bad files: the good images are answered, each bad one gets a line.
        bad, cut = tmp_path / "notes.jpg", tmp_path / "cut.jpg"
        bad.write_bytes(b"not an image at all")
        cut.write_bytes(photos[0][1][:1000])  # a JPEG's start: only the model can tell
        proc = run_command(
            [sys.executable, "-m", "keras_preact.export.client", f"--server={rest}"]
            + ["--model_name=tiny", "--top_k=1", str(cut), files[0], str(bad)],
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        _assert_answered_with_bad_files(proc, [files[0]], reference[[0]], bad, cut)

        grpc_server = serving.start_grpc()
        images = [photos[i][1] for i in chosen]
        answers = client.predict_grpc(grpc_server, "tiny", images)
        for answer, i in zip(answers, chosen):
            np.testing.assert_allclose(answer["probabilities"], reference[i], atol=1e-5)
            top = np.argsort(-reference[i], kind="stable")[:5]
            assert answer["classes"] == top.tolist()
            assert answer["labels"] == NAMES[top].tolist()
        answered, refused = client.answer_each(
            lambda batch: client.predict_grpc(grpc_server, "tiny", batch),
            [("cut.jpg", cut.read_bytes()), ("photo.jpg", images[0])],
        )
        assert [name for name, _ in answered] == ["photo.jpg"]
        np.testing.assert_allclose(answered[0][1]["probabilities"], reference[0], atol=1e-5)
        assert [line for _, line in refused] == [
            "cut.jpg is a truncated or corrupt image: it does not decode (its first bytes: "
            + photos[0][1][:8].hex(" ")
            + ")"
        ]
    finally:
        serving.stop()


def _assert_answered_with_bad_files(proc, good, reference, bad, cut):
    """The client's output for a query of `good` files plus `bad` (not an image) and `cut`."""
    lines = proc.stdout.splitlines()
    assert lines[0::2] == good  # each good file, then its top-1 line
    for line, probabilities in zip(lines[1::2], reference):
        best = int(probabilities.argmax())
        assert line.endswith(f"  {NAMES[best]} ({best})"), line
    errors = proc.stderr.splitlines()
    about_bad = [line for line in errors if line.startswith(f"{bad} ")]
    assert about_bad == [
        f"{bad} is not a JPEG, PNG, GIF or BMP image (its first bytes: "
        f"{bad.read_bytes()[:8].hex(' ')}): not sent."
    ]
    (about_cut,) = [line for line in errors if line.startswith(f"{cut} ")]
    assert about_cut.startswith(f"{cut} is a truncated or corrupt image: it does not decode")
    for word in ("node", "Op:", "Assert", "image_bytes", "Traceback"):
        assert word not in proc.stderr, proc.stderr[-2000:]


def test_local_client_answers_the_good_images_of_a_query_with_bad_ones(
    exported, trained, photos, tmp_path
):
    """--saved_model: 100 random bytes, a cut JPEG and a missing file beside a good photo."""
    reference = keras_reference(trained)
    good = tmp_path / photos[2][0]
    good.write_bytes(photos[2][1])
    bad, cut = tmp_path / "bad.png", tmp_path / "cut.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(100))
    cut.write_bytes(photos[0][1][:1000])
    missing = tmp_path / "missing.png"
    command = [sys.executable, "-m", "keras_preact.export.client", "--top_k=1"]
    command += [f"--saved_model={os.path.dirname(exported.saved_model_dir)}"]
    proc = run_command([*command, str(bad), str(missing), str(good), str(cut)], check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{missing} cannot be read (No such file or directory): not sent." in proc.stderr
    _assert_answered_with_bad_files(proc, [str(good)], reference[[2]], bad, cut)

    nothing = run_command([*command, str(bad), str(missing)], check=False)
    assert nothing.returncode == 1
    assert nothing.stderr.strip().splitlines()[-1] == "No image was answered (2 given)."


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
