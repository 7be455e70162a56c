"""What the parts of keras-preact need beyond Keras: TensorFlow for data, training and export.

The model zoo (layers, builders, weights, preprocessing, `.keras` files) runs
on any Keras 3 backend without TensorFlow; `keras_preact.data`, `.training`,
`.export` and `.analysis` are built on tf.data, tf.distribute, SavedModel and
TFLite. Importing one of them without TensorFlow fails with one line that
says so (`require_tensorflow`), not with a traceback deep inside.

>>> require_tensorflow("keras_preact.data")  # TensorFlow is installed here
"""

from __future__ import annotations

import importlib.util


def tensorflow_installed():
    """Whether `import tensorflow` can succeed here (without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ImportError:  # an import hook that refuses it
        return False


def require_tensorflow(part):
    """Raises `ImportError` naming `part` when TensorFlow is not installed."""
    if not tensorflow_installed():
        raise ImportError(
            f"{part} needs TensorFlow (tf.data, tf.distribute, SavedModel, TFLite): "
            "pip install tensorflow. The model zoo (layers, builders, weights, "
            "preprocess_input, .keras files) runs without it on any Keras backend."
        )
