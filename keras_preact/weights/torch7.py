"""fb.resnet.torch `.t7` module trees (Torch7 binary) -> `layout="fb"`.

The file is read with `torchfile` (PyPI), a maintained pure-Python reader of
Torch7's binary serialisation that knows the CUDA tensor types of GPU-trained
checkpoints; it is loaded with `use_list_heuristic=False` because torchfile
0.1.0 fails on Lua arrays of tensors (a module's cached `output` tables)
otherwise.

`preresnet.lua` changed over time, so the module tree, not a guess, is the
truth: the tree is flattened into its leaf modules in execution order (with
the branch/shortcut structure of each `ConcatTable`), the model's own
units state the same sequence, and the two are compared one module at a time:
type, channels, kernel, stride and padding. The first difference is reported
with its place in the tree (`modules[5].modules[2]...`). Every parameter and
running statistic is mapped; `running_std` (older `nn`, 1/sqrt(var + eps)) is
turned back into a variance, a different BN epsilon is folded into the
variance, and a conv bias (older cudnn builds kept one) is folded into the
moving mean of the BatchNorm that follows it, all exact at inference.
"""

from __future__ import annotations

import numpy as np

from keras_preact.weights.arrays import (
    model_depth,
    stem_adapts,
    torch_conv_kernel,
    torch_dense_kernel,
)

_SKIPPED = ("Copy",)  # nn.Copy: a type cast in the tree, no computation
_KINDS = {
    "SpatialConvolution": "conv",
    "SpatialConvolutionMM": "conv",
    "SpatialBatchNormalization": "bn",
    "BatchNormalization": "bn",
    "ReLU": "relu",
    "SpatialMaxPooling": "maxpool",
    "SpatialAveragePooling": "avgpool",
    "View": "view",
    "Reshape": "view",
    "Linear": "linear",
    "Identity": "identity",
    "CAddTable": "add",
}


def _typename(obj):
    name = getattr(obj, "_typename", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8")
    return name or type(obj).__name__


def _field(obj, name):
    fields = getattr(obj, "_obj", None)
    if isinstance(fields, dict):
        value = fields.get(name.encode(), fields.get(name))
        return (
            None if value is None or (isinstance(value, np.ndarray) and not value.size) else value
        )
    return None


def _children(obj):
    modules = _field(obj, "modules")
    if isinstance(modules, dict):
        return [modules[k] for k in sorted(modules)]
    return list(modules or [])


def flatten(obj, where="model"):
    """The leaf modules of a tree in execution order as `(kind, module, place)`.

    A `ConcatTable` becomes `("[", ...)`, its children separated by `("|", ...)`,
    then `("]", ...)`.
    """
    kind = _typename(obj).rsplit(".", 1)[-1]
    if kind == "Sequential":
        for i, child in enumerate(_children(obj)):
            yield from flatten(child, f"{where}.modules[{i}]")
    elif kind == "ConcatTable":
        yield "[", obj, where
        for i, child in enumerate(_children(obj)):
            if i:
                yield "|", obj, where
            yield from flatten(child, f"{where}.modules[{i}]")
        yield "]", obj, where
    elif kind not in _SKIPPED:
        yield _KINDS.get(kind, kind), obj, where


def expected(model):
    """What the tree of `model`'s fb.resnet.torch twin holds: `(kind, target, description[, stride])`.

    `target` is the Keras layer (path) a module's parameters go to, or None;
    convs also state their stride (a projection subsamples before its
    stride-1 Keras conv, so its stride is the unit's).
    """
    steps = [("conv", "stem_conv", "the 7x7/2 stem conv", 2), ("bn", "stem_bn", "the stem BN")]
    steps += [("relu", None, "the stem ReLU"), ("maxpool", None, "the 3x3/2 max-pool")]
    units = [layer for layer in model.layers if layer.name.startswith("stage")]
    for unit in units:
        name = unit.name
        steps.append(("[", None, f"{name}: ConcatTable(residual, shortcut)"))
        if unit.preactivate:
            steps += [("bn", f"{name}/norm1", f"{name} pre-activation BN"), ("relu", None, "")]
        for index in range(1, unit.num_convs + 1):
            if index > 1:
                norm = unit.norm_before_conv(index)
                steps += [
                    ("bn", f"{name}/{norm}", f"{name} {norm}"),
                    ("relu", None, f"{name} relu"),
                ]
            conv = f"conv{index}"
            stride = getattr(unit, conv).strides[0]
            steps.append(("conv", f"{name}/{conv}", f"{name} {conv}", stride))
        steps.append(("|", None, f"{name}: the shortcut"))
        if unit._project:
            steps.append(("conv", f"{name}/downsample", f"{name} projection conv", unit.strides))
            steps.append(("bn", f"{name}/downsample_norm", f"{name} projection BN"))
        else:
            steps.append(("identity", None, f"{name} identity shortcut"))
        steps += [("]", None, f"end of {name}"), ("add", None, f"{name} addition")]
    steps += [("bn", "post_bn", "the final BN"), ("relu", None, "the final ReLU")]
    steps += [("avgpool", None, "the global average pool"), ("view", None, "the flatten")]
    steps.append(("linear", "predictions", "the classifier"))
    return steps


def _layer(model, target):
    unit, _, attr = target.partition("/")
    try:
        layer = model.get_layer(unit)
    except ValueError:
        return None  # e.g. no classifier with include_top=False
    return getattr(layer, attr) if attr else layer


def _mismatch(where, module, description, problem):
    raise ValueError(
        f"The .t7 tree does not match layout='fb' at {where} ({_typename(module)}): expected "
        f"{description}; {problem}. The checkpoint was built by another version of "
        "preresnet.lua or another depth."
    )


def _conv_values(module, layer, stride, where, description):
    weight = np.asarray(_field(module, "weight"), "float32")
    n_out, n_in = int(_field(module, "nOutputPlane")), int(_field(module, "nInputPlane"))
    kh, kw = int(_field(module, "kH")), int(_field(module, "kW"))
    kernel = torch_conv_kernel(weight.reshape(n_out, n_in, kh, kw))  # MM convs store it 2-D
    got = (int(_field(module, "dW") or 1), int(_field(module, "padW") or 0))
    fits = layer is None or tuple(layer.kernel.shape) == kernel.shape
    if not fits and not (
        layer.name == "stem_conv" and stem_adapts(layer.kernel.shape, kernel.shape)
    ):
        _mismatch(
            where, module, description, f"kernel {kernel.shape}, the model's {layer.kernel.shape}"
        )
    if got != (stride, kh // 2):
        _mismatch(where, module, description, f"stride/padding {got}, expected {(stride, kh // 2)}")
    return kernel, _field(module, "bias")


def _bn_values(module, layer, where, description):
    mean = np.asarray(_field(module, "running_mean"), "float32")
    eps = float(_field(module, "eps") or 1e-5)
    variance = _field(module, "running_var")
    if variance is None:
        std = _field(module, "running_std")  # older nn: the inverse standard deviation
        if std is None:
            _mismatch(where, module, description, "it has no running statistics")
        variance = 1.0 / np.square(np.asarray(std, "float64")) - eps
    variance = np.asarray(variance, "float64")
    gamma = _field(module, "weight")
    beta = _field(module, "bias")
    gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma, "float32")
    beta = np.zeros_like(mean) if beta is None else np.asarray(beta, "float32")
    if layer is not None:
        if tuple(layer.gamma.shape) != mean.shape:
            _mismatch(
                where, module, description, f"{mean.shape[0]} channels vs {layer.gamma.shape[0]}"
            )
        variance = variance + eps - layer.epsilon  # same normalisation with Keras' epsilon
    return [gamma, beta, mean, variance.astype("float32")]


def convert(path, model):
    """`({variable path: array}, [])` for a `layout="fb"` model from a fb.resnet.torch `.t7`.

    Raises `ValueError` at the first module where the tree and the model differ.
    """
    try:
        import torchfile
    except ImportError:
        raise ImportError("Reading .t7 files needs torchfile: pip install torchfile") from None
    try:
        tree = torchfile.load(path, use_list_heuristic=False)
    except Exception as error:  # torchfile raises bare errors on bad input
        raise ValueError(f"{path!r} is not a readable Torch7 file: {error}") from None
    found = list(flatten(tree))
    steps = expected(model)
    values, pending_bias = {}, None
    for index, (kind, target, description, *stride) in enumerate(steps):
        if index >= len(found):
            raise ValueError(
                f"The .t7 tree ends before {description} ({len(found)} modules, the model needs "
                f"{len(steps)}): it is a shallower net than ResNet-{model_depth(model)}."
            )
        got, module, where = found[index]
        if got != kind:
            _mismatch(where, module, description, f"found a {got!r} module")
        layer = _layer(model, target) if target else None
        if kind == "conv":
            values[f"{target}/kernel"], bias = _conv_values(
                module, layer, stride[0], where, description
            )
            if bias is not None and np.any(bias):
                if steps[index + 1][0] != "bn":
                    _mismatch(where, module, description, "a conv bias with no BN to fold into")
                pending_bias = np.asarray(bias, "float32")
        elif kind == "bn":
            gamma, beta, mean, variance = _bn_values(module, layer, where, description)
            if pending_bias is not None:
                mean, pending_bias = mean - pending_bias, None  # BN(conv + b) with mean m - b
            for var, value in zip(
                ("gamma", "beta", "moving_mean", "moving_variance"), (gamma, beta, mean, variance)
            ):
                values[f"{target}/{var}"] = value
        elif kind == "maxpool":
            sizes = [int(_field(module, k) or 0) for k in ("kW", "dW", "padW")]
            if sizes != [3, 2, 1]:
                _mismatch(where, module, description, f"kernel/stride/pad {sizes}")
        elif kind == "linear":
            values["predictions/kernel"] = torch_dense_kernel(_field(module, "weight"))
            values["predictions/bias"] = np.asarray(_field(module, "bias"), "float32")
    if len(found) > len(steps):
        _, module, where = found[len(steps)]
        _mismatch(where, module, "the end of the network", "the tree goes on (a deeper net?)")
    return values, []
