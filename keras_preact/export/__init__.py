"""Export trained keras-preact models: SavedModel for TF Serving, TFLite, ONNX, with verification.

Command line (from the repository root): `python -m export --help`.

Library:

>>> from keras_preact.export import export_all
>>> result = export_all("runs/cifar/model.keras", "exported", model_name="cifar")  # doctest: +SKIP
>>> print(result.summary())  # doctest: +SKIP

Names are imported lazily, so `python -m keras_preact.export.client` stays light.
"""

from keras_preact.requirements import require_tensorflow

require_tensorflow("keras_preact.export")

import importlib

_API = {
    "export_all": "keras_preact.export.pipeline",
    "ExportResult": "keras_preact.export.pipeline",
    "load_model": "keras_preact.export.model",
    "float32_copy": "keras_preact.export.model",
    "resolve_labels": "keras_preact.export.model",
    "build_archive": "keras_preact.export.saved_model",
    "next_version": "keras_preact.export.saved_model",
    "convert_all": "keras_preact.export.tflite",
    "TFLiteRunner": "keras_preact.export.tflite",
    "VARIANTS": "keras_preact.export.tflite",
    "verify_saved_model": "keras_preact.export.verify",
    "verify_tflite": "keras_preact.export.tflite",
    "sample_images": "keras_preact.export.verify",
    "VerificationError": "keras_preact.export.verify",
    "export_onnx": "keras_preact.export.onnx_export",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
