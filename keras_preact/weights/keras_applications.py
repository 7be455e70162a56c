"""keras.applications' ResNet50V2/101V2/152V2 weights -> `layout="keras"`.

keras.applications names layers `conv{stage}_block{unit}_*` (stage 2-5); the
same variables live here in `stage{stage-1}_unit{unit}`: `preact_bn` ->
`norm1`, `1_conv`/`1_bn` -> `conv1`/`norm2`, `2_conv`/`2_bn` -> `conv2`/`norm3`,
`3_conv` -> `conv3`, `0_conv` -> `downsample`; `conv1_conv` -> `stem_conv`.

Two entry points: `copy_keras_applications_weights` copies from a built
keras.applications model; `convert` reads its published `.h5` files, which
Keras 2 wrote in the legacy HDF5 layout (one group per layer name with a
`weight_names` attribute), not Keras 3's object paths, so they are read here
by layer name with h5py.
"""

from __future__ import annotations

import re

import numpy as np

_UNIT_PARTS = {
    "preact_bn": "norm1",
    "1_conv": "conv1",
    "1_bn": "norm2",
    "2_conv": "conv2",
    "2_bn": "norm3",
    "3_conv": "conv3",
    "0_conv": "downsample",
}
_TOP_LEVEL = {"conv1_conv": "stem_conv", "post_bn": "post_bn", "predictions": "predictions"}
_UNIT_NAME = re.compile(r"conv(\d)_block(\d+)_(preact_bn|[0-3]_(?:conv|bn))$")


def target_path(layer_name):
    """The keras-preact layer path for a keras.applications layer name, or None if unknown.

    >>> target_path("conv3_block1_preact_bn")
    'stage2_unit1/norm1'
    """
    match = _UNIT_NAME.match(layer_name)
    if match:
        stage, unit, part = match.groups()
        return f"stage{int(stage) - 1}_unit{unit}/{_UNIT_PARTS[part]}"
    return _TOP_LEVEL.get(layer_name)


def _layer(model, path):
    layer = model
    for part in path.split("/"):
        layer = model.get_layer(part) if layer is model else getattr(layer, part)
    return layer


def copy_keras_applications_weights(source, target):
    """Copies every weight of a keras.applications ResNet-v2 into a keras-preact model.

    Args:
        source: `keras.applications.ResNet50V2(...)` (or 101V2, 152V2).
        target: the matching `keras_preact.ResNet50V2(layout="keras", ...)`
            with the same `include_top` and `classes`.

    Returns the number of layers copied.

    Example:

    >>> import keras, keras_preact
    >>> ka = keras.applications.ResNet50V2(weights=None)
    >>> ours = keras_preact.ResNet50V2(layout="keras")
    >>> copy_keras_applications_weights(ka, ours)
    103
    """
    copied = 0
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        path = target_path(layer.name)
        if path is None:
            raise ValueError(f"Unexpected keras.applications layer {layer.name!r} with weights.")
        destination = _layer(target, path)
        shapes = [w.shape for w in destination.get_weights()]
        if shapes != [w.shape for w in weights]:
            raise ValueError(
                f"Cannot copy {layer.name!r} into {destination.path!r}: shapes "
                f"{[w.shape for w in weights]} vs {shapes}. Is the target built with "
                "layout='keras' and the same depth, include_top and classes?"
            )
        destination.set_weights(weights)
        copied += 1
    return copied


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def convert(path, model=None):
    """`({variable path: array}, [unmapped names])` from a keras.applications legacy `.h5` file.

    Weight names such as `conv2_block1_preact_bn/gamma:0` give the variable
    (`stage1_unit1/norm1/gamma`).
    """
    import h5py

    values, extra = {}, []
    with h5py.File(path, "r") as h5:
        root = h5["model_weights"] if "model_weights" in h5 else h5
        for layer_name in map(_text, root.attrs["layer_names"]):
            group = root[layer_name]
            names = [_text(n) for n in group.attrs.get("weight_names", [])]
            target = target_path(layer_name)
            for name in names:
                if target is None:
                    extra.append(f"{layer_name}/{name}")
                    continue
                variable = name.split("/")[-1].split(":")[0]
                values[f"{target}/{variable}"] = np.asarray(group[name], "float32")
    return values, extra
