"""What gets exported: the trained model (as a float32 copy) and its class names.

* `load_model` reads a `.keras` file, or calls a keras-preact builder by name
  with a weights file.
* `float32_copy` rebuilds the model outside any tf.distribute strategy with
  float32 layers (a mixed-precision model exports Flex ops that the TFLite
  interpreter cannot run) and, where the network allows, a dynamic H/W input.
* `resolve_labels` finds the class names: a labels file given by the user,
  `labels.txt` beside the `.keras` file (the training helpers write one), the
  ImageNet names for 1,000 classes, or else the class indices as strings.

Example:

>>> model = float32_copy(load_model("runs/cifar/model.keras"))  # doctest: +SKIP
>>> labels, source = resolve_labels(model.output_shape[-1], model_path="runs/cifar/model.keras")
... # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os

import keras
import tensorflow as tf

LABELS_FILENAME = "labels.txt"


def load_model(model_path=None, *, builder=None, weights=None, builder_kwargs=None):
    """Loads the model to export.

    Args:
        model_path: a `.keras` file (`model.save`). Mutually exclusive with `builder`.
        builder: a keras-preact builder name, e.g. `"ResNet50V2"` or `"CIFARResNetV2"`.
        weights: weights file (`.weights.h5` or `.keras`) for `builder`.
        builder_kwargs: extra builder arguments (e.g. `{"classes": 10, "depth": 8}`).

    >>> model = load_model(builder="ResNet20V2", weights="run/model.weights.h5")  # doctest: +SKIP
    """
    import keras_preact  # registers the custom layers for deserialization

    if (model_path is None) == (builder is None):
        raise ValueError(
            "Give exactly one of a .keras model file (--model_path) or a builder name (--builder)."
        )
    if model_path is not None:
        model_path = os.fspath(model_path)
        if not model_path.endswith(".keras"):
            raise ValueError(
                f"{model_path!r} is not a .keras file. For a weights-only file pass the "
                "architecture too: --builder=<name, e.g. ResNet50V2> --weights=<file>."
            )
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"No model file at {model_path!r}.")
        return keras.models.load_model(model_path, compile=False)
    fn = getattr(keras_preact, builder, None)
    if not (callable(fn) and builder.endswith("V2") and not isinstance(fn, type)):
        known = sorted(n for n in dir(keras_preact) if n.endswith("V2") and n[0].isupper())
        raise ValueError(f"Unknown builder {builder!r}. Allowed values: {', '.join(known)}.")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"No weights file at {weights!r}.")
    return fn(weights=weights, **dict(builder_kwargs or {}))


@contextlib.contextmanager
def _global_dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_layer(layer):
    config = layer.get_config()
    if "dtype" in config:
        config["dtype"] = "float32"
    return layer.__class__.from_config(config)


def float32_copy(model, dynamic_hw=True):
    """A float32 copy of a functional model with the same weights, outside any strategy.

    Mixed-precision layers become float32; variables are plain (not mirrored),
    so the copy exports the same way whatever strategy trained the original.
    With `dynamic_hw`, the copy takes `[N, H, W, C]` of any H/W when the network
    allows it (convolutions and global pooling); otherwise it keeps the
    original input size.

    >>> copy = float32_copy(model)  # doctest: +SKIP
    >>> copy.input_shape  # doctest: +SKIP
    (None, None, None, 3)
    """
    if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
        raise RuntimeError("float32_copy must not run inside a replica function (strategy.run).")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Export expects one image input and one probability output; {model.name!r} has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    weights = model.get_weights()  # numpy; reads mirrored/distributed variables too
    with _global_dtype_policy("float32"):
        copy = None
        if dynamic_hw:
            channels = model.inputs[0].shape[-1]
            name = model.inputs[0].name or "image"
            try:
                inputs = keras.Input((None, None, channels), name=name, dtype="float32")
                copy = keras.models.clone_model(
                    model, input_tensors=inputs, clone_function=_float32_layer
                )
            except (ValueError, TypeError):
                copy = None  # e.g. a Flatten head: keep the trained size
        if copy is None:
            copy = keras.models.clone_model(model, clone_function=_float32_layer)
    copy.set_weights(weights)
    return copy


def num_classes(model):
    """Number of classes of a classifier's output (its last axis)."""
    shape = model.outputs[0].shape
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"Export expects a classifier with output [batch, classes]; got {tuple(shape)}. "
            "Build the model with include_top=True."
        )
    return int(shape[-1])


def image_size(model):
    """The model's fixed input `(height, width)`, or None when H/W are dynamic."""
    height, width = model.inputs[0].shape[1:3]
    if height is None or width is None:
        return None
    return int(height), int(width)


def has_preprocessing(model):
    """True when the model normalises raw [0, 255] pixels itself (a layer named "preprocessing")."""
    return any(layer.name == "preprocessing" for layer in model.layers)


def read_labels(path):
    """Class names from a text file, one per line (blank lines at the end are ignored)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.strip() for line in lines]


def resolve_labels(classes, labels_file=None, model_path=None):
    """Returns `(labels, source)`: one class name per output index and where they came from.

    Order: `labels_file`; `labels.txt` beside a `.keras` `model_path`; the
    ImageNet class names when `classes == 1000`; else `"0"`, `"1"`, ...

    >>> resolve_labels(3)
    (['0', '1', '2'], 'class indices')
    """
    candidates = []
    if labels_file is not None:
        if not os.path.isfile(labels_file):
            raise FileNotFoundError(f"No labels file at {labels_file!r}.")
        candidates.append(labels_file)
    elif model_path is not None:
        beside = os.path.join(os.path.dirname(os.path.abspath(model_path)), LABELS_FILENAME)
        if os.path.isfile(beside):
            candidates.append(beside)
    for path in candidates:
        labels = read_labels(path)
        if len(labels) != classes:
            raise ValueError(
                f"{path} has {len(labels)} class names but the model has {classes} classes. "
                "Give a labels file with one name per line, in the model's class order (--labels)."
            )
        return labels, path
    if classes == 1000:
        from keras_preact.preprocessing import imagenet_classes

        return [name for _, name in imagenet_classes()], "ImageNet classes (keras_preact)"
    return [str(i) for i in range(classes)], "class indices"


def describe(model):
    """A small JSON-able summary of a model for the reports."""
    return {
        "name": model.name,
        "input_shape": [d if d is None else int(d) for d in model.inputs[0].shape],
        "classes": num_classes(model),
        "parameters": int(model.count_params()),
    }
