"""Input normalisation per weights source, `preprocess_input` and `decode_predictions`.

Every normalisation is defined once here, on raw RGB pixels in [0, 255], and
used by the models (`include_preprocessing=True`), the data pipelines' eval
crops and the export signatures alike.

* `"torch"`: ImageNet mean/std (fb.resnet.torch, the paper's layout).
* `"tf"`: scale to [-1, 1] (timm's `resnetv2_*` and keras.applications).
* `"cifar10"`, `"cifar100"`: the datasets' per-channel mean/std.
* `"digits"`: scikit-learn's digits upsampled to 32x32 RGB (the demo data).
"""

from __future__ import annotations

import functools
import importlib.resources

import keras
import numpy as np

from keras_preact.options import EvalProtocol

# (mean, std) per RGB channel, in [0, 255] pixel units.
NORMALIZATIONS = {
    "torch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "cifar10": ((125.307, 122.950, 113.865), (62.993, 62.089, 66.705)),
    "cifar100": ((129.304, 124.070, 112.434), (68.170, 65.392, 70.418)),
    "digits": ((77.873, 77.873, 77.873), (82.531, 82.531, 82.531)),  # train split
}


def normalization_stats(normalization):
    """Returns `(mean, std)` as float32 arrays of shape (3,) in [0, 255] pixel units.

    `normalization` is a name from `NORMALIZATIONS` or an explicit `(mean, std)` pair.

    >>> mean, std = normalization_stats("tf")
    >>> float(mean[0]), float(std[0])
    (127.5, 127.5)
    """
    if isinstance(normalization, str):
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown normalization {normalization!r}. Allowed values: "
                f"{', '.join(map(repr, NORMALIZATIONS))}, or a (mean, std) pair in [0, 255] units."
            )
        mean, std = NORMALIZATIONS[normalization]
    else:
        try:
            mean, std = normalization
        except (TypeError, ValueError):
            raise ValueError(
                f"normalization must be a name or a (mean, std) pair, got {normalization!r}."
            ) from None
    mean = np.broadcast_to(np.asarray(mean, "float32"), (3,)).copy()
    std = np.broadcast_to(np.asarray(std, "float32"), (3,)).copy()
    if np.any(std <= 0):
        raise ValueError(f"normalization std must be positive, got {std.tolist()}.")
    return mean, std


@keras.saving.register_keras_serializable(package="keras_preact")
class PixelNormalization(keras.layers.Layer):
    """Maps raw RGB in [0, 255] to `(x - mean) / std` per channel, in float32.

    Unlike the stock `keras.layers.Normalization`, whose fixed statistics are
    constants, `mean` and `std` are non-trainable weights: a `.weights.h5`
    file carries the normalisation its model was trained with, so loading it
    into a builder restores that normalisation too.

    Example:

    >>> layer = PixelNormalization(*normalization_stats("tf"))
    >>> float(layer(np.full((1, 1, 1, 3), 255.0))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, mean, std, eval_preprocessing=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean_init = [float(v) for v in np.asarray(mean).reshape(-1)]
        self.std_init = [float(v) for v in np.asarray(std).reshape(-1)]
        # Read from .keras files saved before the model class, which kept the weights'
        # eval protocol here; models now carry it in their config (`model.eval_protocol`).
        self.eval_preprocessing = dict(eval_preprocessing) if eval_preprocessing else None

    def build(self, input_shape):
        channels = len(self.mean_init)
        if input_shape[-1] != channels:
            raise ValueError(
                f"PixelNormalization has {channels} channels, input has {input_shape[-1]}."
            )
        self.mean = self.add_weight(
            shape=(channels,),
            initializer=keras.initializers.Constant(self.mean_init),
            trainable=False,
            name="mean",
        )
        self.std = self.add_weight(
            shape=(channels,),
            initializer=keras.initializers.Constant(self.std_init),
            trainable=False,
            name="std",
        )

    def call(self, inputs):
        return (keras.ops.cast(inputs, self.compute_dtype) - self.mean) / self.std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {**super().get_config(), "mean": self.mean_init, "std": self.std_init}
        if self.eval_preprocessing:
            config["eval_preprocessing"] = self.eval_preprocessing
        return config


def normalization_config(normalization):
    """`normalization` as a config holds it: a name, or `[mean, std]` as lists of floats.

    >>> normalization_config((np.float32(127.5), [64, 64, 64]))
    [[127.5, 127.5, 127.5], [64.0, 64.0, 64.0]]
    """
    if isinstance(normalization, str):
        return normalization
    mean, std = normalization_stats(normalization)
    return [mean.tolist(), std.tolist()]


def normalization_layer(normalization, name="preprocessing", channels=3):
    """A `PixelNormalization` layer for `normalization` (a name or a `(mean, std)` pair).

    `channels=1` normalises grayscale images with the mean of the RGB
    statistics (a gray pixel of value v is normalised as the mean of an RGB
    pixel (v, v, v)'s channels would be, up to the spread of the std).
    """
    mean, std = normalization_stats(normalization)
    if channels == 1:
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    elif channels != 3:
        raise ValueError(f"normalization_layer takes 1 or 3 channels, got {channels}.")
    return PixelNormalization(mean, std, name=name)


DEFAULT_EVAL_PREPROCESSING = EvalProtocol().crop_settings()


def eval_preprocessing(model):
    """How to make `model`'s evaluation crops: `{"interpolation", "crop_fraction", ...}`.

    The model's `eval_protocol` as a dict (`keras_preact.options.EvalProtocol`):
    a model built with pretrained weights (`weights="imagenet"`, a named
    source) carries its source's, saved in `.keras` files; other models have
    the paper's (bilinear, 224 from 256, 320 from 320). A `.keras` file saved
    before the model class kept it in its `preprocessing` layer, which is read
    instead. Pass the result to `keras_preact.data.make_dataset(eval_preprocessing=...)`.

    >>> import keras_preact
    >>> eval_preprocessing(keras_preact.ResNet20V2())["interpolation"]
    'bilinear'
    """
    protocol = getattr(model, "eval_protocol", None)
    if protocol is None:
        saved = {}
        for layer in getattr(model, "layers", ()):
            if isinstance(layer, PixelNormalization) and layer.eval_preprocessing:
                saved.update(layer.eval_preprocessing)
        protocol = EvalProtocol.from_dict(saved)
    return protocol.as_dict()


def preprocess_input(x, normalization="torch"):
    """Normalises raw RGB pixels in [0, 255] (channels last) the way a model expects.

    Use it when a model is built with `include_preprocessing=False`; models
    built with the default `True` do this themselves. Pass the normalization
    of the weights' layout: `"torch"` for `layout="paper"`, `"tf"` for
    `"timm"` and `"keras"` (see `LAYOUTS`). Grayscale images (1 channel) are
    normalised with the mean of the RGB statistics, as the models do.

    Example:

    >>> import numpy as np
    >>> float(preprocess_input(np.full((1, 2, 2, 3), 255.0), "tf").max())
    1.0
    """
    mean, std = normalization_stats(normalization)
    if tuple(getattr(x, "shape", np.shape(x)))[-1:] == (1,):  # grayscale: as the models do
        mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return (np.asarray(x, "float32") - mean) / std
    x = keras.ops.cast(x, "float32")
    return (x - mean) / std


@functools.lru_cache(maxsize=1)
def imagenet_classes():
    """The 1,000 ImageNet classes as `(wnid, name)` pairs in the tfds `imagenet2012` label order.

    The list ships inside the package; nothing is downloaded.

    >>> imagenet_classes()[1]
    ('n01443537', 'goldfish')
    """
    text = (
        importlib.resources.files("keras_preact")
        .joinpath("imagenet_classes.tsv")
        .read_text(encoding="utf-8")
    )
    classes = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        index, wnid, names = line.split("\t")
        if int(index) != len(classes):
            raise RuntimeError(f"imagenet_classes.tsv is out of order at index {index}.")
        classes.append((wnid, names.split(",")[0].strip()))
    return tuple(classes)


def decode_predictions(preds, top=5):
    """Turns ImageNet predictions into `(wnid, name, score)` triples, best first.

    Like `keras.applications.imagenet_utils.decode_predictions`, without a download.

    Args:
        preds: array of shape `(batch, 1000)` (probabilities or logits).
        top: how many classes to return per sample.

    Example:

    >>> import numpy as np
    >>> p = np.zeros((1, 1000)); p[0, 1] = 1.0
    >>> decode_predictions(p, top=1)[0][0][:2]
    ('n01443537', 'goldfish')
    """
    preds = np.asarray(preds)
    classes = imagenet_classes()
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError(
            f"decode_predictions expects a batch of ImageNet predictions with shape "
            f"(samples, {len(classes)}); got shape {preds.shape}."
        )
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(*classes[i], float(row[i])) for i in best])
    return results
