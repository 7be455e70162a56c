"""Copy weights from keras.applications' ResNet-v2 into a `layout="keras"` model.

keras.applications' ResNet50V2/101V2/152V2 name layers `conv{stage}_block{unit}_*`
(stage 2-5); the same variables live here in `stage{stage-1}_unit{unit}`:
`preact_bn` -> `norm1`, `1_conv`/`1_bn` -> `conv1`/`norm2`, `2_conv`/`2_bn` ->
`conv2`/`norm3`, `3_conv` -> `conv3`, `0_conv` -> `downsample`.
"""

from __future__ import annotations

import re

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


def copy_keras_applications_weights(source, target):
    """Copies every weight of a keras.applications ResNet-v2 into a keras-preact model.

    Args:
        source: `keras.applications.ResNet50V2(...)` (or 101V2, 152V2).
        target: the matching `keras_preact.ResNet50V2(layout="keras", ...)`
            with the same `include_top` and `classes`.

    Example:

    >>> ka = keras.applications.ResNet50V2(weights=None)
    >>> ours = keras_preact.ResNet50V2(layout="keras")
    >>> copy_keras_applications_weights(ka, ours)
    """
    copied = 0
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        match = _UNIT_NAME.match(layer.name)
        if match:
            stage, unit, part = match.groups()
            unit_layer = target.get_layer(f"stage{int(stage) - 1}_unit{unit}")
            destination = getattr(unit_layer, _UNIT_PARTS[part])
        elif layer.name in _TOP_LEVEL:
            destination = target.get_layer(_TOP_LEVEL[layer.name])
        else:
            raise ValueError(f"Unexpected keras.applications layer {layer.name!r} with weights.")
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
