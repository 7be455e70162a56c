"""Query a model exported by `keras-preact-export` with image files; print top-k labels.

Installed, the command is `keras-preact-client` (from a checkout:
`python -m keras_preact.export.client`). REST (port 8501, no extra packages):

    keras-preact-client --model_name=preact photo.jpg other.png

gRPC (port 8500; needs `tensorflow-serving-api`):

    keras-preact-client --protocol=grpc --model_name=preact photo.jpg

Without a server, straight from the exported SavedModel (a version folder, or
the model's base folder for its latest version), as TF Serving would run it:

    keras-preact-client --saved_model=exported/preact photo.jpg

The request formats are TF Serving's documented ones:

* REST `POST /v1/models/<name>[/versions/<v>]:predict` with
  `{"signature_name": "serving_default", "instances": [{"b64": "<base64>"}, ...]}`
  (row format; binary values go as `{"b64": ...}`); the answer is
  `{"predictions": [{"probabilities": [...], "classes": [...], "scores": [...],
  "labels": [...]}, ...]}`, one entry per image.
* gRPC `PredictionService/Predict` with a `PredictRequest`: `model_spec.name`,
  `model_spec.signature_name`, optional `model_spec.version`, and
  `inputs["image_bytes"]`, a `DT_STRING` `TensorProto` of shape `[N]` whose
  `string_val` holds the encoded files.

Library use:

>>> body = rest_request([open("photo.jpg", "rb").read()])  # doctest: +SKIP
>>> predict_rest("localhost:8501", "preact", [open("photo.jpg", "rb").read()])  # doctest: +SKIP
[{'labels': ['tabby', ...], 'scores': [...], 'classes': [...], 'probabilities': [...]}]
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.error
import urllib.request

from keras_preact import console

SIGNATURE = "serving_default"
INPUT = "image_bytes"
REST_PORT = 8501
GRPC_PORT = 8500


def rest_request(images, signature_name=SIGNATURE):
    """The REST predict body for encoded images (row format, base64 binary values)."""
    return {
        "signature_name": signature_name,
        "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images],
    }


def rest_url(server, model_name, version=None):
    """`http://<server>/v1/models/<name>[/versions/<version>]:predict`."""
    if "://" not in server:
        server = f"http://{server}"
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return f"{server.rstrip('/')}{path}:predict"


def predict_rest(server, model_name, images, signature_name=SIGNATURE, version=None, timeout=30):
    """Sends images to TF Serving's REST API; returns one dict of outputs per image."""
    body = json.dumps(rest_request(images, signature_name)).encode("utf-8")
    request = urllib.request.Request(
        rest_url(server, model_name, version),
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except json.JSONDecodeError:
            pass
        raise RuntimeError(f"TF Serving answered {e.code}: {detail}") from None
    if "error" in answer:
        raise RuntimeError(f"TF Serving error: {answer['error']}")
    return answer["predictions"]


def grpc_request(images, model_name, signature_name=SIGNATURE, version=None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for encoded images."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[INPUT].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(images))]
            ),
            string_val=list(images),
        )
    )
    return request


def parse_grpc_response(response):
    """`PredictResponse` -> one dict of outputs per image (like the REST answer)."""
    outputs = {}
    for key, proto in response.outputs.items():
        dims = [d.size for d in proto.tensor_shape.dim]
        if proto.string_val:
            values = [v.decode("utf-8") for v in proto.string_val]
        elif proto.int64_val:
            values = list(proto.int64_val)
        elif proto.float_val:
            values = list(proto.float_val)
        else:
            values = _from_tensor_content(proto)
        outputs[key] = _rows(values, dims)
    count = len(next(iter(outputs.values()))) if outputs else 0
    return [{key: rows[i] for key, rows in outputs.items()} for i in range(count)]


def _from_tensor_content(proto):
    import numpy as np
    from tensorflow.core.framework import types_pb2

    dtype = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_INT64: np.int64}[proto.dtype]
    return np.frombuffer(proto.tensor_content, dtype).tolist()


def _rows(values, dims):
    if len(dims) < 2:
        return values
    width = 1
    for d in dims[1:]:
        width *= d
    return [values[i * width : (i + 1) * width] for i in range(dims[0])]


def predict_grpc(server, model_name, images, signature_name=SIGNATURE, version=None, timeout=30):
    """Sends images through TF Serving's gRPC PredictionService; one dict of outputs per image."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = grpc_request(images, model_name, signature_name, version)
    with grpc.insecure_channel(
        server, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            raise RuntimeError(f"TF Serving answered {e.code().name}: {e.details()}") from None
    return parse_grpc_response(response)


def saved_model_version(path):
    """A SavedModel version folder: `path` itself, or the highest integer version inside it."""
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = (
        sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []
    )
    if not versions:
        raise FileNotFoundError(
            f"No SavedModel at {path!r}: give a version folder (with saved_model.pb) or the "
            "model's base folder (with numbered versions), e.g. exported/preact."
        )
    return os.path.join(path, str(versions[-1]))


def predict_saved_model(path, images, signature_name=SIGNATURE):
    """Runs a SavedModel's signature in this process; one dict of outputs per image.

    Loaded with `tf.saved_model.load` (no keras_preact code), so it answers
    like the server: a bad image raises `InvalidArgumentError` naming it.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_version(path))
    if signature_name not in loaded.signatures:
        raise ValueError(
            f"The SavedModel has no signature {signature_name!r}; it has "
            f"{', '.join(sorted(loaded.signatures))}."
        )
    outputs = loaded.signatures[signature_name](**{INPUT: tf.constant(list(images))})
    rows = {key: value.numpy().tolist() for key, value in outputs.items()}
    decoded = {
        key: [[v.decode("utf-8") if isinstance(v, bytes) else v for v in row] for row in value]
        for key, value in rows.items()
    }
    return [{key: values[i] for key, values in decoded.items()} for i in range(len(images))]


def format_predictions(names, predictions, top_k=None):
    """Readable lines: each file, then `score  label (class)` for its top-k."""
    lines = []
    for name, prediction in zip(names, predictions):
        lines.append(name)
        triples = list(zip(prediction["scores"], prediction["labels"], prediction["classes"]))
        for score, label, index in triples[:top_k]:
            lines.append(f"  {score:.4f}  {label} ({index})")
    return "\n".join(lines)


def main(argv):
    from absl import flags

    console.quiet_python_logs()
    FLAGS = flags.FLAGS
    files = argv[1:]
    if not files:
        raise SystemExit("Give one or more image files (JPEG, PNG, GIF, BMP) to classify.")
    images = []
    for path in files:
        try:
            with open(path, "rb") as f:
                images.append(f.read())
        except OSError as e:
            raise SystemExit(f"Cannot read {path}: {e.strerror}") from None
    if FLAGS.saved_model:
        import tensorflow as tf

        try:
            predictions = predict_saved_model(FLAGS.saved_model, images, FLAGS.signature_name)
        except (ValueError, OSError) as e:
            raise SystemExit(f"--saved_model: {e}") from None
        except tf.errors.OpError as e:  # InvalidArgumentError: a file the model cannot read
            raise SystemExit(f"The model refused the request: {e.message}") from None
        print(format_predictions(files, predictions, FLAGS.top_k))
        return
    port = REST_PORT if FLAGS.protocol == "rest" else GRPC_PORT
    server = FLAGS.server or f"localhost:{port}"
    predict = predict_rest if FLAGS.protocol == "rest" else predict_grpc
    try:
        predictions = predict(server, FLAGS.model_name, images, FLAGS.signature_name, FLAGS.version)
    except (RuntimeError, OSError) as e:
        raise SystemExit(f"Request to {server} failed: {e}") from None
    print(format_predictions(files, predictions, FLAGS.top_k))


def _define_flags():
    from absl import flags

    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "REST (8501) or gRPC (8500).")
    flags.DEFINE_string("server", None, "host:port (default: localhost:8501 / localhost:8500).")
    flags.DEFINE_string("model_name", "preact", "Model name the server was started with.")
    flags.DEFINE_integer("version", None, "Model version (default: the server's latest).")
    flags.DEFINE_string("signature_name", SIGNATURE, "Signature taking image_bytes.")
    flags.DEFINE_integer("top_k", None, "Print at most this many classes per image.")
    flags.DEFINE_string(
        "saved_model",
        None,
        "Run this exported SavedModel here instead of asking a server (a version folder, or "
        "the model's base folder for its latest version).",
    )
    flags.DEFINE_boolean("verbose", False, "Show TensorFlow's own logs too (-v for short).")


def usage():
    """`--help`: what the command does, then its flags."""
    from absl import flags

    # absl files the flags of a module run as __main__ under its path.
    module = sys.argv[0] if __name__ == "__main__" else __name__
    return f"{__doc__}\nFlags:\n{flags.FLAGS.module_help(module)}"


def run():
    """The `keras-preact-client` console script."""
    _define_flags()
    console.run(main, usage)


if __name__ == "__main__":
    run()
