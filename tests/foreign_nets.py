"""Independent references of foreign pre-activation ResNets, for testing weight converters.

Two foreign graphs, each written from its own source and nothing in ``keras_preact``:

* timm's ``resnetv2_{18,34,50,101,152}`` (timm 1.x ``timm/models/resnetv2.py``):
  :func:`timm_state_dict` makes a random state dict with exactly timm's keys and shapes, and
  :func:`timm_forward` runs timm's eval-mode forward pass on such a dict.
* fb.resnet.torch's ImageNet pre-activation nets (``models/preresnet.lua``):
  :func:`fb_module_tree` builds the module tree that ``createModel`` builds, as objects of the
  Torch7 writer in ``tests/torch7_writer.py``, and :func:`torch7_forward` interprets such a
  tree (as written, or as read back by ``torchfile.load``) in eval mode.

Both forward passes use raw ``tf.nn`` ops on NHWC float32 images that are already normalised,
run on the CPU (so a GPU's TF32 convolutions cannot blur the reference) and return logits as
numpy arrays.

Random values are chosen so that every parameter matters. BN gamma ~ U(0.5, 1.5), beta ~
N(0, 0.2). Conv weights are He-normal on fan-in, std sqrt(2 / fan_in), which is the
frameworks' own sqrt(2 / fan_out) init times sqrt(fan_out / fan_in): the fan-out init (timm's
and fb's) shrinks activations at every width change (the stem by 147 / 3136), while fan-in
keeps them O(1) through conv + BN + ReLU. The last conv of every residual branch is further
scaled by 1 / sqrt(number of blocks), so the residual stream grows by at most about e over the
whole net instead of doubling its variance at every block.

BN running statistics are *calibrated* by default: the net is run once on two random N(0, 1)
224x224 images and each BN, in forward order, gets running_mean = mu + N(0, 0.2) * sigma and
running_var = sigma^2 * U(0.5, 2.0), where mu, sigma are its input's actual per-channel mean
and std. With purely random statistics (``calibrate=False``: running_mean ~ N(0, 0.2),
running_var ~ U(0.5, 2.0)) the per-channel offsets that max pooling and ReLU create outgrow
the spatial spread, and 10-20% of the channels after each BN + ReLU are dead on a given image,
so changing one channel's statistics can leave the logits exactly unchanged. Calibrated, every
channel is alive, every statistic moves the logits, and the logits stay O(1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "TIMM_DEPTHS",
    "FB_DEPTHS",
    "timm_state_dict",
    "timm_forward",
    "fb_module_tree",
    "torch7_forward",
]

BN_EPS = 1e-5
WIDTHS = (64, 128, 256, 512)  # residual-branch widths of the four stages
EXPANSION = {"basic": 1, "bottleneck": 4}  # stage output channels = width * expansion

# timm 1.x: resnetv2_18/34 are PreActBasic with channels (64, 128, 256, 512), bottle_ratio 1;
# resnetv2_50/101/152 are PreActBottleneck with channels (256, 512, 1024, 2048), ratio 0.25.
TIMM_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# fb.resnet.torch preresnet.lua, the ImageNet ``cfg`` table.
FB_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


# --------------------------------------------------------------------------------------------
# Random parameters (PyTorch / Torch7 layouts)
# --------------------------------------------------------------------------------------------


def _conv_weight(rng: np.random.Generator, n_out: int, n_in: int, k: int, gain: float = 1.0):
    """An OIHW float32 kernel, He-normal on fan-in (see the module docstring), times ``gain``."""
    std = gain * np.sqrt(2.0 / (n_in * k * k))
    return rng.normal(0.0, std, (n_out, n_in, k, k)).astype(np.float32)


def _bn_values(rng: np.random.Generator, channels: int) -> dict[str, np.ndarray]:
    """Random BN parameters and running statistics, in PyTorch's state-dict order."""
    return {
        "weight": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "bias": rng.normal(0.0, 0.2, channels).astype(np.float32),
        "running_mean": rng.normal(0.0, 0.2, channels).astype(np.float32),
        "running_var": rng.uniform(0.5, 2.0, channels).astype(np.float32),
    }


def _calibrate(rng: np.random.Generator, x, mean: np.ndarray, var: np.ndarray) -> None:
    """Overwrites ``mean``/``var`` in place from the BN input ``x`` (NHWC), randomised."""
    values = np.asarray(x, np.float64).reshape(-1, mean.shape[0])
    mu, sigma2 = values.mean(0), values.var(0) + 1e-4
    mean[...] = mu + rng.normal(0.0, 0.2, mu.shape) * np.sqrt(sigma2)
    var[...] = sigma2 * rng.uniform(0.5, 2.0, mu.shape)


def _calibration_images(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 1.0, (2, 224, 224, 3)).astype(np.float32)


def _classifier(rng: np.random.Generator, classes: int, features: int):
    """A (classes, features) weight with std 1/sqrt(features) (logits O(1)) and a bias."""
    weight = rng.normal(0.0, 1.0 / np.sqrt(features), (classes, features)).astype(np.float32)
    bias = rng.normal(0.0, 0.1, classes).astype(np.float32)
    return weight, bias


# --------------------------------------------------------------------------------------------
# timm resnetv2
# --------------------------------------------------------------------------------------------


def timm_state_dict(
    depth: int,
    rng: np.random.Generator | int | None,
    classes: int = 1000,
    *,
    calibrate: bool = True,
    variant: str = "plain",
    width: int = 1,
) -> dict[str, np.ndarray]:
    """A random state dict with exactly the keys and shapes of timm's ``resnetv2_{depth}``.

    Layouts are PyTorch's: conv weights OIHW, BN vectors (C,), ``num_batches_tracked`` a 0-d
    int64 array. Keys come in ``model.state_dict()`` order::

        stem.conv.weight                                    (64, 3, 7, 7)   no stem norm
        stages.{i}.blocks.{j}.downsample.conv.weight        (out, in, 1, 1) first block, see below
        stages.{i}.blocks.{j}.norm1.{weight,bias,running_mean,running_var,num_batches_tracked}
        stages.{i}.blocks.{j}.conv1.weight
        stages.{i}.blocks.{j}.norm2.*   .conv2.weight
        stages.{i}.blocks.{j}.norm3.*   .conv3.weight                       bottleneck only
        norm.*                                              (C,)            final BN + ReLU
        head.fc.weight                                      (classes, C, 1, 1)  a 1x1 conv
        head.fc.bias                                        (classes,)

    Basic (18, 34): norm1 (in), conv1 (w, in, 3, 3), norm2 (w), conv2 (w, w, 3, 3), where w is
    the stage width 64/128/256/512; a downsample where the stride or the width changes, i.e.
    block 0 of stages 1-3. Bottleneck (50, 101, 152): norm1 (in), conv1 (w, in, 1, 1), norm2
    (w), conv2 (w, w, 3, 3), norm3 (w), conv3 (4w, w, 1, 1); a downsample on block 0 of every
    stage, stage 0 included (64 -> 256 at stride 1). C = 512 (basic) or 2048 (bottleneck).

    ``rng``: a numpy Generator or a seed. ``calibrate``: see the module docstring (running
    statistics from a forward pass of :func:`timm_forward`'s graph, about a second).

    ``variant`` (timm's ``resnetv2.py`` builders): ``"plain"`` (above), ``"bit"``
    (``resnetv2_{depth}x{width}_bit``: GroupNorm(32) keys ``weight``/``bias`` only, weight-
    standardised convs, so kernels need no fan-in scaling), ``"d_bn"``, ``"d_gn"``,
    ``"d_evos"`` (``resnetv2_{depth}d``, ``_50d_gn``, ``_50d_evos``: a deep stem
    ``stem.conv1`` (32, 3, 3, 3), ``stem.norm1``, ``stem.conv2`` (32, 32, 3, 3),
    ``stem.norm2``, ``stem.conv3`` (64, 32, 3, 3); average-pool projections have the same
    ``downsample.conv`` key; EvoNorm-S0 norms have ``weight``, ``bias`` and ``v``).
    ``width`` multiplies every width (BiT's x1 ... x4).
    """
    if depth not in TIMM_DEPTHS:
        raise ValueError(f"timm resnetv2 has no depth {depth}; known: {sorted(TIMM_DEPTHS)}")
    rng = np.random.default_rng(rng)
    kind, blocks = TIMM_DEPTHS[depth]
    expansion = EXPANSION[kind]
    branch_gain = 1.0 / np.sqrt(sum(blocks))
    sd: dict[str, np.ndarray] = {}

    def norm(prefix: str, channels: int) -> None:
        values = _bn_values(rng, channels)
        if variant in ("bit", "d_gn", "d_evos"):  # GroupNorm / EvoNorm: no running statistics
            values = {"weight": values["weight"], "bias": values["bias"]}
            if variant == "d_evos":
                values["v"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        for name, value in values.items():
            sd[f"{prefix}.{name}"] = value
        if variant in ("plain", "d_bn"):
            sd[f"{prefix}.num_batches_tracked"] = np.array(rng.integers(1, 10**6), dtype=np.int64)

    stem = 64 * width
    if variant.startswith("d_"):
        sd["stem.conv1.weight"] = _conv_weight(rng, stem // 2, 3, 3)
        norm("stem.norm1", stem // 2)
        sd["stem.conv2.weight"] = _conv_weight(rng, stem // 2, stem // 2, 3)
        norm("stem.norm2", stem // 2)
        sd["stem.conv3.weight"] = _conv_weight(rng, stem, stem // 2, 3)
    else:
        sd["stem.conv.weight"] = _conv_weight(rng, stem, 3, 7)
    in_chs = stem
    for i, (count, width) in enumerate(zip(blocks, [w * width for w in WIDTHS])):
        out_chs = width * expansion
        for j in range(count):
            p = f"stages.{i}.blocks.{j}"
            stride = 2 if (i > 0 and j == 0) else 1
            # PreActBottleneck always gets a proj_layer on block 0 of a stage; PreActBasic only
            # where the stride or the width changes. DownsampleConv(preact=True) has no norm.
            if j == 0 and (kind == "bottleneck" or stride != 1 or in_chs != out_chs):
                sd[f"{p}.downsample.conv.weight"] = _conv_weight(rng, out_chs, in_chs, 1)
            norm(f"{p}.norm1", in_chs)
            if kind == "basic":
                sd[f"{p}.conv1.weight"] = _conv_weight(rng, width, in_chs, 3)
                norm(f"{p}.norm2", width)
                sd[f"{p}.conv2.weight"] = _conv_weight(rng, out_chs, width, 3, branch_gain)
            else:
                sd[f"{p}.conv1.weight"] = _conv_weight(rng, width, in_chs, 1)
                norm(f"{p}.norm2", width)
                sd[f"{p}.conv2.weight"] = _conv_weight(rng, width, width, 3)
                norm(f"{p}.norm3", width)
                sd[f"{p}.conv3.weight"] = _conv_weight(rng, out_chs, width, 1, branch_gain)
            in_chs = out_chs
    norm("norm", in_chs)
    weight, bias = _classifier(rng, classes, in_chs)
    sd["head.fc.weight"] = weight[:, :, None, None]
    sd["head.fc.bias"] = bias
    if calibrate and variant in ("plain", "d_bn"):

        def hook(prefix: str, x) -> None:
            mean, var = sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"]
            _calibrate(rng, x, mean, var)

        _timm_graph(sd, _calibration_images(rng), bn_hook=hook)
    return sd


def _timm_padding(kernel: int, stride: int, dilation: int = 1) -> int:
    """timm's ``get_padding`` (symmetric): ((stride - 1) + dilation * (kernel - 1)) // 2."""
    return ((stride - 1) + dilation * (kernel - 1)) // 2


def _conv_tf(x, weight_oihw, stride_h, stride_w, pad_h, pad_w, bias=None, dilation=1):
    """A Torch-style convolution: OIHW kernel, symmetric zero padding, optional bias."""
    kernel = tf.constant(np.transpose(np.asarray(weight_oihw, np.float32), (2, 3, 1, 0)))
    y = tf.nn.conv2d(
        x,
        kernel,
        strides=[1, stride_h, stride_w, 1],
        padding=[[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]],
        dilations=[1, dilation, dilation, 1],
    )
    if bias is not None:
        y = y + tf.constant(np.asarray(bias, np.float32))
    return y


def _batch_norm_tf(x, gamma, beta, mean, var, eps=BN_EPS):
    """Eval-mode batch norm over the last axis; gamma/beta may be None (affine=false)."""

    def const(value):
        return None if value is None else tf.constant(np.asarray(value, np.float32))

    return tf.nn.batch_normalization(
        x, const(mean), const(var), const(beta), const(gamma), variance_epsilon=float(eps)
    )


def _group_norm_tf(x, gamma, beta, groups=32, eps=BN_EPS):
    """torch's F.group_norm over NHWC: groups of consecutive channels, biased variance."""
    n, h, w, c = x.shape
    g = tf.reshape(x, [-1, h, w, groups, c // groups])
    mean, var = tf.nn.moments(g, axes=[1, 2, 4], keepdims=True)
    g = (g - mean) / tf.sqrt(var + eps)
    return tf.reshape(g, [-1, h, w, c]) * gamma + beta


def _evonorm_s0_tf(x, gamma, beta, v, groups=32, eps=BN_EPS):
    """timm's EvoNorm2dS0: x * sigmoid(v * x) / sqrt(group variance + eps) * weight + bias."""
    n, h, w, c = x.shape
    g = tf.reshape(x, [-1, h, w, groups, c // groups])
    _, var = tf.nn.moments(g, axes=[1, 2, 4], keepdims=True)
    std = tf.reshape(tf.broadcast_to(tf.sqrt(var + eps), tf.shape(g)), tf.shape(x))
    return x * tf.sigmoid(v * x) / std * gamma + beta


def _timm_avg_down_tf(x, stride, dilation):
    """timm's DownsampleAvg pool: AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    where it subsamples; AvgPool2dSame(2, 1) in a dilated stage (zeros padded after, counted);
    nothing at stride 1 without dilation."""
    if stride > 1:
        h, w = int(x.shape[1]), int(x.shape[2])
        pads = [[0, 0], [0, h % 2], [0, w % 2], [0, 0]]  # ceil mode: a partial last window
        total = tf.nn.avg_pool2d(tf.pad(x, pads), 2, 2, "VALID")
        count = tf.nn.avg_pool2d(tf.pad(tf.ones_like(x[..., :1]), pads), 2, 2, "VALID")
        return total / count
    if dilation > 1:
        return tf.nn.avg_pool2d(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), 2, 1, "VALID")
    return x


def _max_pool_tf(x, k_h, k_w, stride_h, stride_w, pad_h, pad_w, ceil_mode=False):
    """PyTorch/Torch7 max pooling: padding never wins (-inf), floor (or ceil) output size."""
    height, width = int(x.shape[1]), int(x.shape[2])

    def extra(size, k, s, p):
        # Extra bottom/right padding for ceil mode, with Torch's rule that the last window
        # must start inside the input or the left padding.
        if not ceil_mode:
            return 0
        out = -(-(size + 2 * p - k) // s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
        return max(0, (out - 1) * s + k - (size + 2 * p))

    eh, ew = extra(height, k_h, stride_h, pad_h), extra(width, k_w, stride_w, pad_w)
    x = tf.pad(
        x, [[0, 0], [pad_h, pad_h + eh], [pad_w, pad_w + ew], [0, 0]], constant_values=-np.inf
    )
    return tf.nn.max_pool2d(x, ksize=[k_h, k_w], strides=[stride_h, stride_w], padding="VALID")


def timm_forward(state_dict: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """timm ``ResNetV2.forward`` in eval mode for a ``resnetv2_*`` state dict.

    ``images``: float32 (N, H, W, 3), already normalised. Returns logits (N, classes).

    The graph follows timm 1.x exactly (structure read off the keys present):

    * stem: ``stem.conv`` 7x7 stride 2 pad 3, no norm, then MaxPool2d(3, stride 2, pad 1);
    * every block: ``x_preact = norm1(x)`` (BN + ReLU); ``shortcut = downsample.conv(x_preact)``
      (1x1, stride s, pad 0) if the block has one, else ``x``; residual ``conv1(x_preact)``,
      ``norm2`` (BN + ReLU), ``conv2``[, ``norm3``, ``conv3``]; output ``residual + shortcut``.
      Stride s = 2 on block 0 of stages 1-3: on conv1 (the first 3x3) in PreActBasic, on conv2
      (the 3x3) in PreActBottleneck. Padding is timm's symmetric ``get_padding``;
    * ``norm`` (BN + ReLU), global average pool, ``head.fc`` (1x1 conv with bias), flatten.

    Every key of the state dict must be used (``num_batches_tracked`` aside), so a dict with
    extra or misnamed keys raises ``ValueError``; a missing key raises ``KeyError``.
    """
    return _timm_graph(state_dict, images)


def timm_features(state_dict: dict[str, Any], images: np.ndarray, output_stride: int = 32):
    """timm's ``features_only=True`` taps and logits: ``(taps, logits)``.

    ``taps``: the raw ``stem.conv`` output (stride 2) and each stage's output
    (``stages.0``-``stages.3``: the residual stream, no final norm), as numpy.
    ``output_stride`` 16 or 8 dilates the last stages as timm's ``ResNetV2``
    does (``resnetv2.py``: ``if curr_stride >= output_stride: dilation *=
    stride; stride = 1``; a stage's block 0 takes ``first_dilation = 1 if
    dilation in (1, 2) else 2`` on its first 3x3, every other 3x3 the stage's
    dilation; ``get_padding`` with the dilation; projections keep stride 1).
    """
    taps = []
    logits = _timm_graph(state_dict, images, output_stride=output_stride, taps=taps)
    return [t.numpy() for t in taps], logits


def _timm_graph(
    state_dict: dict[str, Any], images: np.ndarray, bn_hook=None, output_stride=32, taps=None
) -> np.ndarray:
    """:func:`timm_forward`; ``bn_hook(prefix, x)`` is called before each BN reads its stats;
    ``taps``, a list, receives the ``features_only`` taps (:func:`timm_features`)."""
    taps = [] if taps is None else taps
    unused = {k for k in state_dict if not k.endswith(".num_batches_tracked")}

    def get(key: str) -> np.ndarray:
        unused.discard(key)
        return np.asarray(state_dict[key], np.float32)

    bit = "stem.conv.weight" in state_dict and "norm.running_mean" not in state_dict

    def conv(x, prefix: str, stride: int = 1, dilation: int = 1):
        w = get(f"{prefix}.weight")
        if bit:  # timm's StdConv2d(eps=1e-8): each output channel's kernel standardised
            flat = w.reshape(w.shape[0], -1).astype(np.float64)
            mean, var = flat.mean(1, keepdims=True), flat.var(1, keepdims=True)
            w = ((flat - mean) / np.sqrt(var + 1e-8)).reshape(w.shape).astype(np.float32)
        dilation = dilation if w.shape[2] > 1 else 1
        pad = _timm_padding(w.shape[2], stride, dilation)
        return _conv_tf(x, w, stride, stride, pad, pad, dilation=dilation)

    def norm_act(x, prefix: str):
        if f"{prefix}.v" in state_dict:  # EvoNorm2dS0: x * sigmoid(v x) / group std
            return _evonorm_s0_tf(
                x, get(f"{prefix}.weight"), get(f"{prefix}.bias"), get(f"{prefix}.v")
            )
        if f"{prefix}.running_mean" not in state_dict:  # GroupNormAct(32)
            return tf.nn.relu(_group_norm_tf(x, get(f"{prefix}.weight"), get(f"{prefix}.bias")))
        if bn_hook is not None:
            bn_hook(prefix, x)
        x = _batch_norm_tf(
            x,
            get(f"{prefix}.weight"),
            get(f"{prefix}.bias"),
            get(f"{prefix}.running_mean"),
            get(f"{prefix}.running_var"),
        )
        return tf.nn.relu(x)

    def downsample(x, prefix: str, stride: int, dilation: int):
        if "stem.conv1.weight" in state_dict:  # DownsampleAvg: pool, then a 1x1 conv
            x = _timm_avg_down_tf(x, stride, dilation)
            stride = 1
        return conv(x, f"{prefix}.downsample.conv", stride)

    with tf.device("/CPU:0"):
        x = tf.constant(np.asarray(images, np.float32))
        if "stem.conv1.weight" in state_dict:  # stem_type="deep"
            x = norm_act(conv(x, "stem.conv1", stride=2), "stem.norm1")
            x = norm_act(conv(x, "stem.conv2"), "stem.norm2")
            x = conv(x, "stem.conv3")
        else:
            x = conv(x, "stem.conv", stride=2)
        taps.append(x)
        if bit:  # stem_type="fixed": ConstantPad2d(1, 0.) then MaxPool2d(3, 2)
            x = tf.nn.max_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID")
        else:
            x = _max_pool_tf(x, 3, 3, 2, 2, 1, 1)
        i, curr_stride, dilation = 0, 4, 1
        while f"stages.{i}.blocks.0.norm1.weight" in state_dict:
            stage_stride = 1 if i == 0 else 2
            if curr_stride >= output_stride:
                dilation, stage_stride = dilation * stage_stride, 1
            first_dilation = 1 if dilation in (1, 2) else 2
            j = 0
            while f"stages.{i}.blocks.{j}.norm1.weight" in state_dict:
                p = f"stages.{i}.blocks.{j}"
                stride = stage_stride if j == 0 else 1
                d1 = first_dilation if j == 0 else dilation
                bottleneck = f"{p}.conv3.weight" in state_dict
                x_preact = norm_act(x, f"{p}.norm1")
                shortcut = x
                if f"{p}.downsample.conv.weight" in state_dict:
                    shortcut = downsample(x_preact, p, stride, dilation)
                if bottleneck:
                    y = conv(x_preact, f"{p}.conv1")
                    y = conv(norm_act(y, f"{p}.norm2"), f"{p}.conv2", stride, d1)
                    y = conv(norm_act(y, f"{p}.norm3"), f"{p}.conv3")
                else:
                    y = conv(x_preact, f"{p}.conv1", stride, d1)
                    y = conv(norm_act(y, f"{p}.norm2"), f"{p}.conv2", 1, dilation)
                x = y + shortcut
                j += 1
            taps.append(x)
            curr_stride *= stage_stride
            i += 1
        x = norm_act(x, "norm")
        x = tf.reduce_mean(x, axis=[1, 2])
        w = get("head.fc.weight")
        logits = tf.matmul(x, tf.constant(w.reshape(w.shape[0], -1).T)) + get("head.fc.bias")
    if unused:
        raise ValueError(f"state dict keys not in the resnetv2 graph: {sorted(unused)[:10]}")
    return logits.numpy()


# --------------------------------------------------------------------------------------------
# fb.resnet.torch preresnet.lua
# --------------------------------------------------------------------------------------------


class _FbBuilder:
    """Makes Torch7 module objects (via the writer) with the fields a saved fb model carries.

    Every module gets ``output``/``gradInput`` (empty CUDA tensors; a table for CAddTable),
    ``train = false`` (saved after ``model:evaluate()``) and ``_type = "torch.CudaTensor"``
    (set by ``model:cuda()``), as nn.Module and ``Module:type`` leave them.
    """

    def __init__(self, rng: np.random.Generator, writer: Any, bias: bool, branch_gain: float):
        self.rng = rng
        self.writer = writer
        self.bias = bias
        self.branch_gain = branch_gain
        self.bn_stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(module) -> arrays

    def tensor(self, array: np.ndarray):
        return self.writer.cuda(np.ascontiguousarray(array, np.float32))

    def mod(self, typename: str, **fields: Any):
        base = {
            "output": self.tensor(np.empty(0)),
            "gradInput": self.tensor(np.empty(0)),
            "train": False,
            "_type": "torch.CudaTensor",
        }
        base.update(fields)
        return self.writer.module(typename, **base)

    def seq(self, typename: str, *modules: Any):
        return self.mod(typename, modules=list(modules))

    def conv(self, n_in, n_out, kw, kh, dw=1, dh=1, padw=0, padh=0, gain=1.0):
        """``cudnn.SpatialConvolution(nInputPlane, nOutputPlane, kW, kH, dW, dH, padW, padH)``."""
        weight = _conv_weight(self.rng, n_out, n_in, kh, gain)  # kW == kH throughout
        bias = self.rng.normal(0.0, 0.1, n_out) if self.bias else None
        return self.mod(
            "cudnn.SpatialConvolution",
            nInputPlane=n_in,
            nOutputPlane=n_out,
            kW=kw,
            kH=kh,
            dW=dw,
            dH=dh,
            padW=padw,
            padH=padh,
            groups=1,
            weight=self.tensor(weight),
            bias=None if bias is None else self.tensor(bias),
        )

    def sbn(self, channels: int):
        """``nn.SpatialBatchNormalization(channels)``: eps 1e-5, momentum 0.1, affine."""
        values = _bn_values(self.rng, channels)
        bn = self.mod(
            "nn.SpatialBatchNormalization",
            eps=BN_EPS,
            momentum=0.1,
            affine=True,
            **{name: self.tensor(v) for name, v in values.items()},
        )
        # The very arrays handed to the writer, so calibration can update them in place.
        self.bn_stats[id(bn)] = (values["running_mean"], values["running_var"])
        return bn

    def calibrate(self, tree: Any) -> None:
        """Sets every BN's running statistics from a forward pass (module docstring)."""

        def hook(module: Any, x) -> None:
            _calibrate(self.rng, x, *self.bn_stats[id(module)])

        _torch7_graph(tree, _calibration_images(self.rng), bn_hook=hook)

    def relu(self):
        return self.mod("cudnn.ReLU", inplace=True)

    def shortcut(self, n_in: int, n_out: int, stride: int):
        """shortcutType 'B': a 1x1 conv + BN where the width changes, else ``nn.Identity``."""
        if n_in != n_out:
            return self.seq(
                "nn.Sequential", self.conv(n_in, n_out, 1, 1, stride, stride), self.sbn(n_out)
            )
        return self.mod("nn.Identity")

    def unit(self, branch: list[Any], n_in: int, n_out: int, stride: int):
        residual = self.seq("nn.Sequential", *branch)
        concat = self.seq("nn.ConcatTable", residual, self.shortcut(n_in, n_out, stride))
        add = self.mod("nn.CAddTable", inplace=True, gradInput=[])
        return self.seq("nn.Sequential", concat, add)

    def basicblock(self, n_in: int, n: int, stride: int, first: bool):
        branch = [] if first else [self.sbn(n_in), self.relu()]
        branch += [
            self.conv(n_in, n, 3, 3, stride, stride, 1, 1),
            self.sbn(n),
            self.relu(),
            self.conv(n, n, 3, 3, 1, 1, 1, 1, gain=self.branch_gain),
        ]
        return self.unit(branch, n_in, n, stride)

    def bottleneck(self, n_in: int, n: int, stride: int, first: bool):
        branch = [] if first else [self.sbn(n_in), self.relu()]
        branch += [
            self.conv(n_in, n, 1, 1, 1, 1, 0, 0),
            self.sbn(n),
            self.relu(),
            self.conv(n, n, 3, 3, stride, stride, 1, 1),
            self.sbn(n),
            self.relu(),
            self.conv(n, n * 4, 1, 1, 1, 1, 0, 0, gain=self.branch_gain),
        ]
        return self.unit(branch, n_in, n * 4, stride)


def fb_module_tree(
    depth: int,
    rng: np.random.Generator | int | None,
    writer: Any,
    *,
    bias: bool = False,
    classes: int = 1000,
    calibrate: bool = True,
) -> Any:
    """The module tree fb.resnet.torch's ``preresnet.lua`` builds for ImageNet, random values.

    ``writer``: the ``tests/torch7_writer.py`` module (anything with its ``module(typename,
    **fields)`` and ``cuda(array)``). Returns the root ``writer.module("nn.Sequential", ...)``,
    ready for ``writer.save(path, tree)``. ``bias=True`` puts a random bias on every conv (as
    files saved with cuDNN < v4 carried); by default convs have no ``bias`` field, as
    ``ConvInit`` sets ``v.bias = nil``. Float tensors are ``torch.CudaTensor`` (after
    ``model:cuda()``). ``calibrate``: see the module docstring (about a second).

    The root's ``modules``, as in the Lua file::

        [0] cudnn.SpatialConvolution(3, 64, 7, 7, 2, 2, 3, 3)
        [1] nn.SpatialBatchNormalization(64)      stem BN + ReLU (timm has no stem norm)
        [2] cudnn.ReLU(true)
        [3] nn.SpatialMaxPooling(3, 3, 2, 2, 1, 1)
        [4..7] stages: nn.Sequential of units, strides 1, 2, 2, 2
        [8] nn.Copy(nil, nil, true)
        [9] nn.SpatialBatchNormalization(C), [10] cudnn.ReLU(true)
        [11] cudnn.SpatialAveragePooling(7, 7, 1, 1)
        [12] nn.View(C):setNumInputDims(3)        fields size, numElements, numInputDims
        [13] nn.Linear(C, 1000)                   weight (1000, C), bias (1000,)

    A unit is ``nn.Sequential(nn.ConcatTable(branch, shortcut), nn.CAddTable(true))``. The
    branch is ``nn.Sequential`` of [SBN, ReLU,] conv, SBN, ReLU, conv (basic, stride on the
    first 3x3) or [SBN, ReLU,] 1x1, SBN, ReLU, 3x3 (stride), SBN, ReLU, 1x1 to 4n
    (bottleneck); the leading SBN + ReLU is absent in *every* unit of stage 1 (``layer``
    passes type 'first' to each block of that stage). The shortcut gets the unit's raw input:
    ``nn.Sequential(1x1 conv stride s, SBN)`` where nInputPlane != nOutputPlane (block 0 of
    stages 2-4, and of stage 1 for bottlenecks: 64 -> 256), else ``nn.Identity``.

    ``nn.View``'s ``size`` is a LongStorage in Torch; the writer has no storages, so it is an
    int64 array (a LongTensor) here. Torch class-level fields (``nDim``...) are not saved.
    """
    if depth not in FB_DEPTHS:
        raise ValueError(f"preresnet.lua has no ImageNet depth {depth}; known: {sorted(FB_DEPTHS)}")
    rng = np.random.default_rng(rng)
    kind, blocks = FB_DEPTHS[depth]
    b = _FbBuilder(rng, writer, bias, branch_gain=1.0 / np.sqrt(sum(blocks)))
    block = b.basicblock if kind == "basic" else b.bottleneck
    expansion = EXPANSION[kind]

    model = [b.conv(3, 64, 7, 7, 2, 2, 3, 3), b.sbn(64), b.relu()]
    model.append(
        b.mod(
            "nn.SpatialMaxPooling",
            kW=3,
            kH=3,
            dW=2,
            dH=2,
            padW=1,
            padH=1,
            ceil_mode=False,
            indices=b.tensor(np.empty(0)),
        )
    )
    channels = 64
    for stage, (count, width) in enumerate(zip(blocks, WIDTHS)):
        stride = 1 if stage == 0 else 2
        units = []
        for i in range(count):
            units.append(block(channels, width, stride if i == 0 else 1, first=stage == 0))
            channels = width * expansion
        model.append(b.seq("nn.Sequential", *units))
    model.append(b.mod("nn.Copy"))  # nn.Copy(nil, nil, true): dontCast is nil, so no field
    model += [b.sbn(channels), b.relu()]
    model.append(
        b.mod(
            "cudnn.SpatialAveragePooling",
            kW=7,
            kH=7,
            dW=1,
            dH=1,
            padW=0,
            padH=0,
            ceil_mode=False,
            count_include_pad=True,
        )
    )
    model.append(
        b.mod(
            "nn.View",
            size=np.array([channels], np.int64),
            numElements=channels,
            numInputDims=3,
        )
    )
    weight, lin_bias = _classifier(rng, classes, channels)
    model.append(b.mod("nn.Linear", weight=b.tensor(weight), bias=b.tensor(lin_bias)))
    tree = b.seq("nn.Sequential", *model)
    if calibrate:
        b.calibrate(tree)
    return tree


# --------------------------------------------------------------------------------------------
# Torch7 module-tree interpreter
# --------------------------------------------------------------------------------------------


def _node(obj: Any) -> tuple[str, dict[str, Any]]:
    """(class name, fields with str keys) of a torchfile ``TorchObject`` or a writer object."""
    attrs = vars(obj) if hasattr(obj, "__dict__") else {}
    if "_typename" in attrs and "_obj" in attrs:  # torchfile.TorchObject
        typename, raw = attrs["_typename"], attrs["_obj"]
    elif "typename" in attrs and "fields" in attrs:  # torch7_writer.TorchClass
        typename, raw = attrs["typename"], attrs["fields"]
    else:
        raise TypeError(f"not a Torch7 module object: {type(obj).__name__}")
    if isinstance(typename, bytes):
        typename = typename.decode()
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    return typename, fields


def _array(value: Any) -> np.ndarray | None:
    """A tensor field as float32 numpy (writer ``CudaArray`` or plain array); None if absent."""
    if value is None:
        return None
    if hasattr(value, "__dict__") and "array" in vars(value):  # torch7_writer.CudaArray
        value = vars(value)["array"]
    array = np.ascontiguousarray(value, np.float32)
    return None if array.size == 0 else array


def _ints(value: Any) -> list[int]:
    """A size field (LongStorage, LongTensor, list or number) as a list of ints."""
    if hasattr(value, "__dict__") and "array" in vars(value):
        value = vars(value)["array"]
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _children(fields: dict[str, Any]) -> Iterator[Any]:
    modules = fields.get("modules")
    if modules is None:
        return iter(())
    if isinstance(modules, dict):  # a Lua table that torchfile did not turn into a list
        return (modules[k] for k in sorted(modules))
    return iter(modules)


def _as_nchw_flat(x, batch: bool):
    """Flattens in Torch's (C, H, W) order, as ``nn.View`` on an NCHW tensor would."""
    if len(x.shape) == 4:
        x = tf.transpose(x, [0, 3, 1, 2])
    return tf.reshape(x, [x.shape[0], -1]) if batch else tf.reshape(x, [-1])


def torch7_forward(tree: Any, images: np.ndarray, *, exact_average_pool: bool = False):
    """Runs a Torch7 module tree in eval mode on NHWC float32 images; returns logits (numpy).

    ``tree``: the root module as ``torchfile.load`` returns it (``TorchObject``s with bytes
    names and fields), or the writer's in-memory objects. Images are already normalised.

    Supported classes (anything else raises ``NotImplementedError``): ``nn.Sequential``,
    ``nn.ConcatTable``, ``nn.CAddTable``, ``{nn,cudnn}.SpatialConvolution`` (symmetric
    padW/padH, dW/dH, optional bias, a 2-D ``SpatialConvolutionMM``-style weight reshaped),
    ``{nn,cudnn}.SpatialBatchNormalization`` (running_mean/running_var and eps; an old file's
    ``running_std`` is 1/sqrt(var + eps) and used as such; affine=false allowed),
    ``{nn,cudnn}.ReLU``, ``{nn,cudnn}.SpatialMaxPooling`` (-inf padding, floor or ceil mode),
    ``{nn,cudnn}.SpatialAveragePooling``, ``nn.Identity``, ``nn.Copy``, ``nn.View`` (flattens
    in Torch's NCHW order) and ``nn.Linear``.

    Average pooling: preresnet.lua ends with a 7x7 stride-1 average pool, which on the 7x7 map
    of a 224 input is a global average. On a larger input (320 -> 10x10) Torch would give a
    4x4 map and ``nn.View(C)`` would then fail, so the Lua net only works at 224. The
    converted Keras model uses a global average pool and so runs at any size; to serve as its
    reference there, an average pool whose input is larger than its kernel is taken as a
    global average, unless ``exact_average_pool=True`` (Torch's own windowed pooling,
    count_include_pad).
    """
    return _torch7_graph(tree, images, exact_average_pool=exact_average_pool)


def _torch7_graph(tree: Any, images: np.ndarray, exact_average_pool=False, bn_hook=None):
    """:func:`torch7_forward`; ``bn_hook(module, x)`` is called before each BN reads its stats."""

    def run(module: Any, x):
        typename, f = _node(module)
        if typename == "nn.Sequential":
            for child in _children(f):
                x = run(child, x)
            return x
        if typename == "nn.ConcatTable":
            return [run(child, x) for child in _children(f)]
        if typename == "nn.CAddTable":
            total = x[0]
            for term in x[1:]:
                total = total + term
            return total
        if typename in ("nn.Identity", "nn.Copy"):
            return x
        if typename in (
            "nn.SpatialConvolution",
            "nn.SpatialConvolutionMM",
            "cudnn.SpatialConvolution",
        ):
            n_in, n_out = int(f["nInputPlane"]), int(f["nOutputPlane"])
            k_w, k_h = int(f["kW"]), int(f["kH"])
            if int(f.get("groups") or 1) != 1:
                raise NotImplementedError(f"{typename} with groups != 1")
            weight = _array(f["weight"]).reshape(n_out, n_in, k_h, k_w)
            return _conv_tf(
                x,
                weight,
                int(f.get("dH") or 1),
                int(f.get("dW") or 1),
                int(f.get("padH") or 0),
                int(f.get("padW") or 0),
                _array(f.get("bias")),
            )
        if typename in (
            "nn.SpatialBatchNormalization",
            "cudnn.SpatialBatchNormalization",
        ):
            if bn_hook is not None:
                bn_hook(module, x)
            eps = float(f.get("eps") or BN_EPS)
            gamma, beta = _array(f.get("weight")), _array(f.get("bias"))
            mean = _array(f["running_mean"])
            if f.get("running_var") is not None:
                return _batch_norm_tf(x, gamma, beta, mean, _array(f["running_var"]), eps)
            inv_std = _array(f["running_std"])  # old nn: running_std = 1 / sqrt(var + eps)
            y = (x - mean) * inv_std
            if gamma is not None:
                y = y * gamma
            return y if beta is None else y + beta
        if typename in ("nn.ReLU", "cudnn.ReLU"):
            return tf.nn.relu(x)
        if typename in ("nn.SpatialMaxPooling", "cudnn.SpatialMaxPooling"):
            return _max_pool_tf(
                x,
                int(f["kH"]),
                int(f["kW"]),
                int(f["dH"]),
                int(f["dW"]),
                int(f.get("padH") or 0),
                int(f.get("padW") or 0),
                ceil_mode=bool(f.get("ceil_mode")),
            )
        if typename in ("nn.SpatialAveragePooling", "cudnn.SpatialAveragePooling"):
            k_h, k_w = int(f["kH"]), int(f["kW"])
            pad_h, pad_w = int(f.get("padH") or 0), int(f.get("padW") or 0)
            larger = int(x.shape[1]) > k_h or int(x.shape[2]) > k_w
            if larger and not exact_average_pool and pad_h == pad_w == 0:
                return tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            if f.get("ceil_mode"):
                raise NotImplementedError(f"{typename} with ceil_mode")
            if f.get("count_include_pad") is False and (pad_h or pad_w):
                raise NotImplementedError(f"{typename} excluding padding from the count")
            x = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
            return tf.nn.avg_pool2d(
                x, [k_h, k_w], [int(f.get("dH") or 1), int(f.get("dW") or 1)], "VALID"
            )
        if typename == "nn.View":
            size = _ints(f["size"]) if f.get("size") is not None else [-1]
            n_input_dims = f.get("numInputDims")
            n_elements = int(np.prod([int(d) for d in x.shape]))
            per_item = abs(int(np.prod(size)))
            batch = (len(x.shape) > n_input_dims) if n_input_dims else n_elements != per_item
            flat = _as_nchw_flat(x, batch)
            if -1 not in size and int(flat.shape[-1]) != per_item:
                raise ValueError(f"nn.View{tuple(size)} cannot view {tuple(x.shape)} (NHWC)")
            return tf.reshape(flat, ([flat.shape[0]] if batch else []) + size)
        if typename == "nn.Linear":
            weight = _array(f["weight"])
            y = tf.matmul(x, tf.constant(weight.T))
            bias = _array(f.get("bias"))
            return y if bias is None else y + bias
        raise NotImplementedError(f"torch7_forward: unsupported module {typename}")

    with tf.device("/CPU:0"):
        out = run(tree, tf.constant(np.asarray(images, np.float32)))
    return out.numpy()
