"""Loading weights saved by this package (`.weights.h5` and `.keras`), with clear errors.

Keras matches a weights file to a model by position and class, and reports a
mismatch as a failed `variable.assign`. `load_weights` first compares the
file's variables with the model's, layer by layer, and names the first layer
whose variables differ, with both shapes, before anything is assigned.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile

import h5py

_WEIGHTS_IN_ARCHIVE = "model.weights.h5"


def _variables_in_h5(h5file):
    """`{path: shape}` for every stored variable (datasets under `.../vars/`)."""
    entries = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and "/vars/" in name:
            entries[name] = tuple(obj.shape)

    h5file.visititems(visit)
    return entries


def read_variable_shapes(path):
    """The variables stored in a `.weights.h5` or `.keras` file, as `{path: shape}`."""
    if path.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as archive:
                data = archive.read(_WEIGHTS_IN_ARCHIVE)
        except (zipfile.BadZipFile, KeyError) as error:
            raise ValueError(
                f"{path!r} is not a valid .keras archive (no {_WEIGHTS_IN_ARCHIVE} inside): {error}"
            ) from None
        with h5py.File(io.BytesIO(data), "r") as h5file:
            return _variables_in_h5(h5file)
    try:
        with h5py.File(path, "r") as h5file:
            return _variables_in_h5(h5file)
    except OSError as error:
        raise ValueError(f"{path!r} is not a readable HDF5 weights file: {error}") from None


def _model_variable_shapes(model):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.weights.h5")
        model.save_weights(path)
        return read_variable_shapes(path)


def _to_snake_case(name):
    from keras.src.utils.naming import to_snake_case  # the rule Keras names file groups by

    return to_snake_case(name)


def check_weights_match(model, path):
    """Raises `ValueError` naming the first layer whose stored variables differ from `model`'s."""
    stored = read_variable_shapes(path)
    expected = _model_variable_shapes(model)
    if stored == expected:
        return
    used = {}
    for layer in model.layers:
        key = _to_snake_case(type(layer).__name__)
        used[key] = used.get(key, -1) + 1
        group = f"layers/{key}" + (f"_{used[key]}" if used[key] else "") + "/"
        want = {p[len(group) :]: s for p, s in expected.items() if p.startswith(group)}
        have = {p[len(group) :]: s for p, s in stored.items() if p.startswith(group)}
        if want == have:
            continue
        for var in sorted(set(want) | set(have)):
            if want.get(var) != have.get(var):
                raise ValueError(
                    f"Weights file {path!r} does not match model {model.name!r}: first mismatch "
                    f"at layer {layer.name!r} ({type(layer).__name__}), variable {var!r}: the model "
                    f"expects shape {want.get(var, 'nothing')}, the file has "
                    f"{have.get(var, 'nothing')}. Build the architecture the file was saved from "
                    "(same depth, unit, layout, classes and include_top)."
                )
    extra = sorted(set(stored) - set(expected))
    missing = sorted(set(expected) - set(stored))
    raise ValueError(
        f"Weights file {path!r} does not match model {model.name!r}: the file has "
        f"{len(stored)} variables and the model {len(expected)} "
        f"(first extra in the file: {extra[:1]}, first missing: {missing[:1]}). Build the "
        "architecture the file was saved from (same depth, unit, layout, classes and include_top)."
    )


def load_weights(model, weights):
    """Loads `weights` into `model` after checking that they match it.

    Args:
        model: a Keras model built by this package (or any Keras model).
        weights: path to a `.weights.h5` file or a `.keras` archive saved by
            Keras 3 (`keras_preact.weights.load_weights` also takes named
            sources and foreign checkpoints).

    Example:

    >>> import os, tempfile, keras_preact
    >>> folder = tempfile.TemporaryDirectory()
    >>> saved = os.path.join(folder.name, "three_classes.keras")
    >>> keras_preact.ResNet20V2(classes=3).save(saved)  # a whole model file works too
    >>> load_weights(keras_preact.ResNet20V2(classes=3), saved).output_shape
    (None, 3)
    >>> folder.cleanup()
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be None or a path to a .weights.h5 / .keras file, got {weights!r}."
        )
    weights = os.fspath(weights)
    if not weights.endswith((".weights.h5", ".keras")):
        raise ValueError(
            f"Unsupported weights file {weights!r}: expected a path ending in '.weights.h5' "
            "(model.save_weights) or '.keras' (model.save), or None."
        )
    if not os.path.isfile(weights):
        raise ValueError(f"Weights file not found: {weights!r}.")
    if model is None:
        return None
    check_weights_match(model, weights)
    model.load_weights(weights)
    return model
