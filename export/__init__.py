"""Export trained keras-preact models: SavedModel for TF Serving, TFLite, ONNX, with verification.

Command line (from the repository root): `python -m export --help`.

Library:

>>> from export import export_all
>>> result = export_all("runs/cifar/model.keras", "exported", model_name="cifar")  # doctest: +SKIP
>>> print(result.summary())  # doctest: +SKIP

Names are imported lazily, so `python -m export.serving.client` stays light.
"""

import importlib

_API = {
    "export_all": "export.pipeline",
    "ExportResult": "export.pipeline",
    "load_model": "export.model",
    "float32_copy": "export.model",
    "resolve_labels": "export.model",
    "build_archive": "export.saved_model",
    "next_version": "export.saved_model",
    "convert_all": "export.tflite",
    "TFLiteRunner": "export.tflite",
    "VARIANTS": "export.tflite",
    "verify_saved_model": "export.verify",
    "verify_tflite": "export.tflite",
    "sample_images": "export.verify",
    "VerificationError": "export.verify",
    "export_onnx": "export.onnx_export",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
