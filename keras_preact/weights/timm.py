"""timm `resnetv2_*` state dicts (`.safetensors`, or `.pth`/`.bin` with torch) -> the timm layouts.

`describe` tells which: `"timm"` (resnetv2_18 ... 101), `"bit"` (BiT: weight-
standardised convs, GroupNorm, any width) or `"timm_d"` (the 'd' nets: deep
stem, average-pool projections; BatchNorm, GroupNorm or EvoNorm-S0).

timm's keys (`timm/models/resnetv2.py`, `PreActBasic` / `PreActBottleneck`)
name the same parts as this package's units, so the mapping is a rename:
`stem.conv` -> `stem_conv`, `stages.{i}.blocks.{j}.{norm,conv}{k}` ->
`stage{i+1}_unit{j+1}/{norm,conv}{k}`, `...downsample.conv` -> `downsample`,
`norm` -> `post_bn`, `head.fc` (a 1x1 conv) -> `predictions`. Conv kernels go
from OIHW to HWIO; BatchNorm's `weight/bias/running_mean/running_var` become
`gamma/beta/moving_mean/moving_variance`; the `num_batches_tracked` counters
have no Keras counterpart and are skipped.

`.safetensors` files are read with the `safetensors` package's NumPy API (no
torch needed); PyTorch pickles need torch.
"""

from __future__ import annotations

import re

import numpy as np

from keras_preact.weights.arrays import torch_conv_kernel, torch_dense_kernel

_BN = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
    "v": "v",  # EvoNorm-S0's
}
_UNIT = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(?:(norm\d|conv\d)|downsample\.conv)\.(\w+)$")
_TOP = {"stem.conv": "stem_conv", "norm": "post_bn"}
_TOP.update({f"stem.conv{i}": f"stem_conv{i}" for i in (1, 2, 3)})  # the 'd' nets' deep stem
_TOP.update({f"stem.norm{i}": f"stem_norm{i}" for i in (1, 2)})


def read_state_dict(path, fmt="safetensors"):
    """The checkpoint's tensors as `{key: numpy array}`."""
    if fmt == "safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError(
                "Reading .safetensors needs the safetensors package: pip install safetensors"
            ) from None
        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"{path!r} is not a readable safetensors file: {error}") from None
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{path!r} is a PyTorch pickle; reading it needs torch (pip install torch), or "
            "convert it to .safetensors first."
        ) from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    return {k.removeprefix("module."): v.float().numpy() for k, v in state.items()}


def _shapes(path, fmt):
    """`{key: shape}` of a checkpoint (a .safetensors header only; a pickle is read whole)."""
    if fmt == "safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    return {key: np.shape(value) for key, value in read_state_dict(path, fmt).items()}


def describe(path, fmt="safetensors"):
    """What a timm resnetv2 checkpoint is: `{"layout", "norm", "width_multiplier", "depth"}`, read
    from its keys and shapes (the deep stem of the 'd' nets, EvoNorm's `v`, BatchNorm's
    running statistics, GroupNorm otherwise, the stem's width).

    BiT (7x7 stem, GroupNorm) is layout "bit"; 'd' nets "timm_d"; the others "timm".
    """
    shapes = _shapes(path, fmt)
    deep = "stem.conv1.weight" in shapes
    if any(key.endswith(".v") for key in shapes):
        norm = "evonorm_s0"
    elif any(key.endswith("running_mean") for key in shapes):
        norm = "batch"
    elif any(key.startswith("stages.") and "norm" in key for key in shapes):
        norm = "group"
    else:
        norm = None  # no resnetv2 norms at all: the timm layout (the mapping will say more)
    stem = shapes.get("stem.conv3.weight" if deep else "stem.conv.weight")
    width = stem[0] // 64 if stem and stem[0] % 64 == 0 else None
    layout = "timm_d" if deep else ("bit" if norm == "group" else "timm")
    return {"layout": layout, "norm": norm, "width_multiplier": width, "depth": _depth(shapes)}


# units per stage -> depth (basic units for 18 and 34)
_DEPTHS = {(2, 2, 2, 2): 18, (3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
_DEPTHS[(3, 24, 36, 3)] = 200


def _depth(shapes):
    """The net's depth from its blocks (None if it is none of the ImageNet depths)."""
    blocks = {}
    for key in shapes:
        match = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            stage, block = map(int, match.groups())
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    units = tuple(blocks.get(i, 0) for i in range(4))
    depth = _DEPTHS.get(units)
    basic = not any(key.endswith("conv3.weight") and key.startswith("stages") for key in shapes)
    return 34 if depth == 50 and basic else depth


def _target(key):
    """Our variable path for a timm key, `None` to skip it, or `KeyError` if unknown."""
    match = _UNIT.match(key)
    if match:
        stage, block, part, var = match.groups()
        unit = f"stage{int(stage) + 1}_unit{int(block) + 1}"
        part = part or "downsample"
    else:
        prefix, _, var = key.rpartition(".")
        if prefix == "head.fc":
            return f"predictions/{'kernel' if var == 'weight' else var}"
        if prefix not in _TOP:
            raise KeyError(key)
        unit, part = None, _TOP[prefix]
    if var == "num_batches_tracked":
        return None
    if "norm" in part or part == "post_bn":
        if var not in _BN:
            raise KeyError(key)
        var = _BN[var]
    elif var == "weight":
        var = "kernel"
    return "/".join(p for p in (unit, part, var) if p)


def convert(path, model, fmt="safetensors"):
    """`{variable path: array}` for a `layout="timm"` model from a timm resnetv2 checkpoint."""
    values, extra = {}, []
    for key, tensor in read_state_dict(path, fmt).items():
        try:
            target = _target(key)
        except KeyError:
            extra.append(key)
            continue
        if target is None:
            continue
        tensor = np.asarray(tensor)
        if target == "predictions/kernel":
            tensor = torch_dense_kernel(tensor)
        elif target.endswith("/kernel"):
            tensor = torch_conv_kernel(tensor) if tensor.ndim == 4 else tensor
        values[target] = tensor.astype("float32")
    return values, extra
