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

Each file is checked before it is sent (readable, not empty, a JPEG, PNG,
GIF or BMP signature); a file that is not, or that the model refuses
(truncated, corrupt, too large: TF Serving's INVALID_ARGUMENT names its batch
index), gets one line on stderr, and the other images are answered. The
command exits non-zero only when no image was answered.

Library use:

>>> body = rest_request([open("photo.jpg", "rb").read()])  # doctest: +SKIP
>>> predict_rest("localhost:8501", "preact", [open("photo.jpg", "rb").read()])  # doctest: +SKIP
[{'labels': ['tabby', ...], 'scores': [...], 'classes': [...], 'probabilities': [...]}]
"""

from __future__ import annotations

import base64
import json
import os
import re
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
        except (json.JSONDecodeError, AttributeError):
            pass
        if e.code == 400:  # INVALID_ARGUMENT: the request's content (an image) was refused
            raise Refused(str(detail)) from None
        raise RuntimeError(f"TF Serving answered {e.code}: {_one_line(str(detail))}") from None
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
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise Refused(e.details() or "") from None
            details = _one_line(e.details() or "")
            raise RuntimeError(f"TF Serving answered {e.code().name}: {details}") from None
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


def load_signature(path, signature_name=SIGNATURE):
    """The serving signature of a SavedModel (a version folder or a base folder), loaded here."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_version(path))
    if signature_name not in loaded.signatures:
        raise ValueError(
            f"The SavedModel has no signature {signature_name!r}; it has "
            f"{', '.join(sorted(loaded.signatures))}."
        )
    return loaded.signatures[signature_name]


def run_signature(signature, images):
    """Runs a loaded signature on encoded images; one dict of outputs per image.

    A bad image raises `Refused` naming its index, as the server's answer does.
    """
    import tensorflow as tf

    try:
        outputs = signature(**{INPUT: tf.constant(list(images))})
    except tf.errors.InvalidArgumentError as e:
        raise Refused(e.message) from None
    rows = {key: value.numpy().tolist() for key, value in outputs.items()}
    decoded = {
        key: [[v.decode("utf-8") if isinstance(v, bytes) else v for v in row] for row in value]
        for key, value in rows.items()
    }
    return [{key: values[i] for key, values in decoded.items()} for i in range(len(images))]


def predict_saved_model(path, images, signature_name=SIGNATURE):
    """Runs a SavedModel's signature in this process; one dict of outputs per image.

    Loaded with `tf.saved_model.load` (no keras_preact code), so it answers
    like the server: a bad image raises `Refused` naming it.
    """
    return run_signature(load_signature(path, signature_name), images)


# ------------------------------------------------------------------ bad images


class Refused(RuntimeError):
    """The model refused a request because of its content (TF Serving's INVALID_ARGUMENT).

    `reason` is the refusal in one line, without TensorFlow's node and op names;
    `index` the batch index of the image it names (`image_bytes[i]`), or None.
    """

    def __init__(self, message):
        self.reason = refusal_reason(message)
        match = _IMAGE_INDEX.search(self.reason)
        self.index = int(match.group(1)) if match else None
        super().__init__(self.reason)

    def about(self, name):
        """The reason with the image named by `name` instead of its batch index."""
        return _IMAGE_INDEX.sub(lambda _: name, self.reason, count=1)


_IMAGE_INDEX = re.compile(r"image_bytes\[(\d+)\]")
_TF_NOISE = (
    re.compile(r"\s*\[\[.*?\]\]", re.S),  # [[{{node Assert/Assert}}]]
    re.compile(r"\s*\[Op:[^\]]*\]"),  # [Op:__inference_signature_wrapper_...]
    re.compile(r"\s*\{\{[^}]*\}\}"),  # {{function_node ...}}
)


def refusal_reason(message):
    """A TensorFlow / TF Serving error message in one line, without node and op names.

    >>> refusal_reason("Graph execution error:\\n\\nDetected at node Assert/Assert defined at "
    ...     "(most recent call last):\\nassertion failed: [image_bytes[1] is not a JPEG image "
    ...     '(its first bytes: \\\\"6e 6f\\\\")]\\n\\t [[{{node Assert/Assert}}]] '
    ...     "[Op:__inference_signature_wrapper_9]")
    'image_bytes[1] is not a JPEG image (its first bytes: 6e 6f)'
    """
    text = str(message)
    for pattern in _TF_NOISE:
        text = pattern.sub("", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    noise = ("Graph execution error", "Detected at node", "File ", "Traceback")
    named = [line for line in lines if "image_bytes[" in line]
    plain = [line for line in lines if not line.startswith(noise)]
    line = (named or plain or lines or [type(message).__name__])[0]
    line = re.sub(r"^(?:assertion failed:\s*)", "", line)
    if line.startswith("[") and line.endswith("]"):
        line = line[1:-1].strip()
    # A formatted string tensor comes quoted (and its quotes escaped, through gRPC).
    line = line.replace('\\"', '"')
    return re.sub(r'(first bytes: )"([0-9a-f ]*)"', r"\1\2", line)


def _one_line(text):
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


# Each format's leading bytes (as `keras_preact.export.saved_model` checks them).
_MAGICS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM")


def image_problem(data):
    """Why encoded bytes cannot be sent as an image (a phrase after the file's name), or None.

    >>> image_problem(b""), image_problem(b"GIF89a...")
    ('is empty', None)
    >>> image_problem(b"hello")
    'is not a JPEG, PNG, GIF or BMP image (its first bytes: 68 65 6c 6c 6f)'
    """
    if not data:
        return "is empty"
    if not data.startswith(_MAGICS):
        return f"is not a JPEG, PNG, GIF or BMP image (its first bytes: {data[:8].hex(' ')})"
    return None


def answer_each(predict, named_images):
    """Sends `[(name, bytes)]` through `predict`; an image the model refuses is left out and the
    rest are sent again.

    Returns `([(name, prediction)], [(name, line)])`: the answered images in
    order, and the refused ones with a line saying why (the file named where
    the refusal named its index). A refusal that names no image refuses them all.
    """
    pending, refused = list(named_images), []
    while pending:
        try:
            predictions = predict([data for _, data in pending])
        except Refused as e:
            if e.index is None or not 0 <= e.index < len(pending):
                return [], refused + [
                    (name, f"{name} was refused: {e.reason}") for name, _ in pending
                ]
            name, _ = pending.pop(e.index)
            refused.append((name, e.about(name)))
            continue
        return [(name, p) for (name, _), p in zip(pending, predictions)], refused
    return [], refused


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
    """Answers every usable image; one line (stderr) per file it could not answer.

    Exits non-zero only when no image was answered.
    """
    from absl import flags

    console.quiet_python_logs()
    FLAGS = flags.FLAGS
    files = argv[1:]
    if not files:
        raise SystemExit("Give one or more image files (JPEG, PNG, GIF, BMP) to classify.")
    usable, skipped = read_images(files)
    for name, why in skipped:
        print(f"{name} {why}: not sent.", file=sys.stderr)
    answered, refused = answer_each(_predictor(FLAGS), usable) if usable else ([], [])
    for _, line in refused:
        print(line, file=sys.stderr)
    if answered:
        names, predictions = zip(*answered)
        print(format_predictions(names, predictions, FLAGS.top_k))
    sys.stderr.flush()
    if not answered:
        raise SystemExit(f"No image was answered ({len(files)} given).")


def read_images(paths):
    """`([(path, bytes)], [(path, why)])`: the files that can be sent, and why the others cannot."""
    usable, skipped = [], []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            skipped.append((path, f"cannot be read ({e.strerror or e})"))
            continue
        problem = image_problem(data)
        if problem:
            skipped.append((path, problem))
        else:
            usable.append((path, data))
    return usable, skipped


def _predictor(FLAGS):
    """`predict(images)` for the flags: the local SavedModel, or the REST / gRPC server.

    Failures other than a refused image end the command with one line.
    """
    if FLAGS.saved_model:
        try:
            signature = load_signature(FLAGS.saved_model, FLAGS.signature_name)
        except (ValueError, OSError) as e:
            raise SystemExit(f"--saved_model: {e}") from None
        return lambda images: run_signature(signature, images)
    port = REST_PORT if FLAGS.protocol == "rest" else GRPC_PORT
    server = FLAGS.server or f"localhost:{port}"
    predict = predict_rest if FLAGS.protocol == "rest" else predict_grpc

    def ask(images):
        try:
            return predict(server, FLAGS.model_name, images, FLAGS.signature_name, FLAGS.version)
        except Refused:
            raise
        except (RuntimeError, OSError) as e:
            raise SystemExit(f"Request to {server} failed: {e}") from None

    return ask


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
    return console.command_help(__doc__, __name__)


def run():
    """The `keras-preact-client` console script."""
    _define_flags()
    console.run(main, usage)


if __name__ == "__main__":
    run()
