"""The serving client (REST and gRPC against stand-in servers speaking TF Serving's
formats), the models.config example and class-name resolution.
"""

import base64
import json
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
        bad = tmp_path / "notes.jpg"
        bad.write_bytes(b"not an image at all")
        proc = run_command(
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
