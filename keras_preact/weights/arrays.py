"""What the checkpoint converters share: PyTorch/Torch7 arrays in Keras' layout, a model's
depth, and the log line.

A leaf module (NumPy and the standard library only), so that `convert` can
import the converter modules (`timm`, `torch7`, `keras_applications`) and they
can import these helpers without a cycle.

>>> torch_conv_kernel(np.zeros([8, 3, 7, 7])).shape
(7, 7, 3, 8)
>>> torch_dense_kernel(np.zeros([10, 64, 1, 1])).shape
(64, 10)
"""

from __future__ import annotations

import re
import sys

import numpy as np


def log(message):
    """One line for the user on stderr (what was loaded, what was skipped)."""
    print(f"keras-preact: {message}", file=sys.stderr, flush=True)


def torch_conv_kernel(weight):
    """A PyTorch/Torch7 conv weight (out, in, kh, kw) as a Keras kernel (kh, kw, in, out)."""
    return np.ascontiguousarray(np.transpose(np.asarray(weight, "float32"), (2, 3, 1, 0)))


def torch_dense_kernel(weight):
    """A Linear weight (out, in) or a 1x1-conv head (out, in, 1, 1) as a Dense kernel (in, out)."""
    weight = np.asarray(weight, "float32")
    return np.ascontiguousarray(weight.reshape(weight.shape[0], -1).T)


def model_depth(model):
    """The depth of a keras-preact model: its config's, or its default name's for a model saved
    before the model class (a plain functional model); None for other models."""
    depth = getattr(model, "depth", None)
    if depth is None:
        match = re.fullmatch(r"resnet(\d+)v2", model.name)
        depth = int(match.group(1)) if match else None
    return depth


# The first convolution (a 7x7 stem's, or a deep stem's first): adapted to the input channels.
STEM_KERNELS = ("stem_conv/kernel", "stem_conv1/kernel")


def adapt_input_kernel(kernel, channels):
    """An RGB conv kernel `(kh, kw, 3, out)` for `channels` inputs, as timm's `adapt_input_conv`.

    One channel sums the RGB kernels (a gray image v gives what (v, v, v)
    gave); more repeat R, G, B, R, ... and scale by 3 / channels (an input
    with every channel v gives what (v, v, v) gave).

    >>> kernel = np.ones((1, 1, 3, 2))
    >>> adapt_input_kernel(kernel, 1)[0, 0, :, 0].tolist(), adapt_input_kernel(kernel, 4).shape
    ([3.0], (1, 1, 4, 2))
    """
    kernel = np.asarray(kernel, "float32")
    if kernel.shape[2] == channels:
        return kernel
    if kernel.shape[2] != 3:
        raise ValueError(f"Only RGB kernels are adapted; this one has {kernel.shape[2]} inputs.")
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    repeats = -(-channels // 3)
    return np.tile(kernel, (1, 1, repeats, 1))[:, :, :channels, :] * (3.0 / channels)


def stem_adapts(model_shape, file_shape):
    """Whether a file's stem kernel of `file_shape` fits `model_shape` once adapted."""
    model_shape, file_shape = tuple(model_shape), tuple(file_shape)
    return (
        len(model_shape) == len(file_shape) == 4
        and file_shape[2] == 3
        and model_shape[:2] + model_shape[3:] == file_shape[:2] + file_shape[3:]
    )
