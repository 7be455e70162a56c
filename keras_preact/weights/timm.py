"""timm `resnetv2_*` state dicts (`.safetensors`, or `.pth`/`.bin` with torch) -> `layout="timm"`.

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
}
_UNIT = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(?:(norm\d|conv\d)|downsample\.conv)\.(\w+)$")
_TOP = {"stem.conv": "stem_conv", "norm": "post_bn"}


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
    if part.startswith("norm") or part == "post_bn":
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
