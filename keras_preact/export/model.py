"""What gets exported: the trained model (as a float32 copy) and its class names.

* `load_model` reads a `.keras` file, or calls a keras-preact builder by name
  with a weights file.
* `float32_copy` rebuilds the model outside any tf.distribute strategy with
  float32 layers (a mixed-precision model exports Flex ops that the TFLite
  interpreter cannot run) and, where the network allows, a dynamic H/W input.
* `prepare` turns what the user names (a Keras model, a `.keras` file or a
  training run's directory) into a `ServingPlan`: the float32 copy, class
  names, crop/resize sizes and interpolation, the one place they are decided.
* `resolve_labels` finds the class names: a labels file given by the user,
  `labels.txt` beside the `.keras` file (the training helpers write one), the
  ImageNet names for 1,000 classes, or else the class indices as strings.

Example:

>>> model = float32_copy(load_model("runs/cifar/model.keras"))  # doctest: +SKIP
>>> labels, source = resolve_labels(model.output_shape[-1], model_path="runs/cifar/model.keras")
... # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os

import keras
import tensorflow as tf

import keras_preact  # also registers the custom layers for deserialization
from keras_preact import data, run_dir
from keras_preact.models.base import ResNetV2
from keras_preact.models.float32 import float32_copy
from keras_preact.options import EvalProtocol
from keras_preact.preprocessing import eval_preprocessing, imagenet_classes

LABELS_FILENAME = run_dir.LABELS
DEFAULT_CROP = 224  # the paper's ImageNet evaluation crop, for a model of any input size


def load_model(model_path=None, *, builder=None, weights=None, builder_kwargs=None):
    """Loads the model to export.

    Args:
        model_path: a `.keras` file (`model.save`). Mutually exclusive with `builder`.
        builder: a keras-preact builder name, e.g. `"ResNet50V2"` or `"CIFARResNetV2"`.
        weights: weights file (`.weights.h5` or `.keras`) for `builder`.
        builder_kwargs: extra builder arguments (e.g. `{"classes": 10, "depth": 8}`).

    >>> model = load_model(builder="ResNet20V2", weights="run/model.weights.h5")  # doctest: +SKIP
    """
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
    model_class = isinstance(fn, type) and issubclass(fn, ResNetV2) and fn is not ResNetV2
    if not (callable(fn) and builder.endswith("V2") and (model_class or not isinstance(fn, type))):
        known = sorted(
            n for n in dir(keras_preact) if n.endswith("V2") and n[0].isupper() and n != "ResNetV2"
        )
        raise ValueError(f"Unknown builder {builder!r}. Allowed values: {', '.join(known)}.")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"No weights file at {weights!r}.")
    return fn(weights=weights, **dict(builder_kwargs or {}))


def flag_source(flags, builder_kwargs):
    """What a command line names, from its flags: `--model_dir` (a training run),
    `--model_path` (a .keras file) or `--builder` with `--weights` (exactly one); the run
    directory or file path as given, or the built model."""
    given = [f"--{n}" for n in ("model_dir", "model_path", "builder") if flags[n].value]
    if len(given) != 1:
        raise ValueError(
            "Give exactly one of --model_dir (a training run), --model_path (a .keras file) or "
            f"--builder (with --weights); got {', '.join(given) or 'none'}."
        )
    if flags.model_dir:
        if not os.path.isdir(flags.model_dir):
            raise FileNotFoundError(f"--model_dir {flags.model_dir!r} is not a folder.")
        return flags.model_dir
    if flags.model_path:
        return flags.model_path
    return load_model(builder=flags.builder, weights=flags.weights, builder_kwargs=builder_kwargs)


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
    """True when the model normalises raw [0, 255] pixels itself: its config says so, or (a
    model of another kind) it has a layer named "preprocessing"."""
    if isinstance(model, ResNetV2):
        return model.get_config()["include_preprocessing"]
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


@dataclasses.dataclass
class ServingPlan:
    """What one export serves: the float32 model, its class names and its eval geometry."""

    model: keras.Model
    labels: list
    labels_source: str
    crop_size: int
    resize_size: int
    interpolation: str
    normalization: str | None  # only for a model without its own preprocessing layer
    pixel_size: tuple | None  # the copy's fixed input (H, W), None when dynamic
    spec: run_dir.ModelSpec | None = None

    def run_calibration(self):
        """The run's own training images for int8 calibration, or None (logged) when not here."""
        from absl import logging

        if self.spec is None or self.spec.dataset is None:
            return None
        try:
            return calibration_data(
                self.spec.dataset,
                self.crop_size,
                self.spec.eval_preprocessing,
                data_dir=self.spec.data_dir,
                image_size=self.spec.image_size,
            )
        except ValueError as e:
            logging.warning("int8 calibration: the run's data is not here (%s).", e)
            return None


def load_source(source):
    """`(model, spec or None, model_path or None)` for a Keras model, `.keras` file or run dir.

    A `.keras` file inside a run directory (beside its `spec.json`) gets that spec too.
    """
    if isinstance(source, keras.Model):
        return source, None, None
    path = os.fspath(source)
    if tf.io.gfile.isdir(path):
        return load_model(run_dir.model_path(path)), run_dir.read_spec(path), None
    model = load_model(path)
    folder = os.path.dirname(os.path.abspath(path))
    spec = None
    if tf.io.gfile.exists(os.path.join(folder, run_dir.SPEC)):
        spec = run_dir.read_spec(folder)
    return model, spec, path


def serving_geometry(model, spec=None, crop_size=None, resize_size=None, interpolation=None):
    """`(crop_size, resize_size, interpolation)` of the image-bytes signature and TFLite input.

    Each is the explicit argument if given, else the run's `spec` (its first
    eval crop, the weights source's or the paper's resize, the source's
    interpolation), else the model's: its fixed square input size resized from
    the same side, or 224 from the shorter side its weights source evaluates at
    (the model's `eval_protocol`).

    >>> serving_geometry(keras_preact.ResNet20V2(classes=2))
    (32, 32, 'bilinear')
    """
    protocol = spec.eval_protocol if spec else EvalProtocol.from_dict(eval_preprocessing(model))
    interpolation = interpolation or protocol.interpolation
    fixed = image_size(model)
    if spec is not None:
        crop = int(crop_size or spec.crop_size)
        return crop, int(resize_size or spec.resize_size(crop)), interpolation
    if crop_size is None and fixed is not None and fixed[0] == fixed[1]:
        return fixed[0], int(resize_size or fixed[0]), interpolation
    crop = int(crop_size or DEFAULT_CROP)
    resize = resize_size or protocol.resize_size(crop)
    return crop, int(resize), interpolation


def prepare(
    source, labels=None, crop_size=None, resize_size=None, interpolation=None, normalization=None
):
    """The `ServingPlan` for `source` (a Keras model, `.keras` file or run directory)."""
    model, spec, model_path = load_source(source)
    classes = num_classes(model)
    if has_preprocessing(model):
        normalization = None
    elif normalization is None:
        raise ValueError(
            f"Model {model.name!r} has no 'preprocessing' layer, so it expects normalised "
            "input: pass the normalization it was trained with (e.g. normalization='torch')."
        )
    if isinstance(labels, (str, os.PathLike)):
        labels, labels_source = resolve_labels(classes, labels_file=os.fspath(labels))
    elif labels is not None:
        labels, labels_source = [str(x) for x in labels], "given"
        if len(labels) != classes:
            raise ValueError(f"{len(labels)} labels given for a model with {classes} classes.")
    elif spec is not None:
        labels, labels_source = list(spec.labels), f"the run's {run_dir.SPEC}"
    else:
        labels, labels_source = resolve_labels(classes, model_path=model_path)
    crop, resize, interpolation = serving_geometry(
        model, spec, crop_size, resize_size, interpolation
    )
    copy = float32_copy(model)
    pixel_size = image_size(copy)
    if pixel_size is not None and pixel_size != (crop, crop):
        raise ValueError(
            f"The model takes {pixel_size[0]}x{pixel_size[1]} inputs only; crop_size "
            f"{crop} does not fit. Use crop_size={pixel_size[0]}."
        )
    return ServingPlan(
        copy, labels, labels_source, crop, resize, interpolation, normalization, pixel_size, spec
    )


def calibration_data(
    dataset, crop_size, eval_preprocessing, split="train", data_dir=None, image_size=None
):
    """Eval crops of a `keras_preact.data` dataset (a tf.data.Dataset) for int8 calibration.

    Training images, never test data; `eval_preprocessing` is the model's
    (`{"interpolation", "crop_fraction"}`); `image_size` the dataset's
    training size where it has one to choose (default: `crop_size`). Raises
    ValueError when the data is not there.
    """
    try:
        return data.make_dataset(
            dataset,
            split,
            batch_size=32,
            data_dir=data_dir,
            training=False,
            image_size=image_size or crop_size,
            eval_crop_size=crop_size,
            eval_preprocessing=eval_preprocessing,
        )
    except data.MissingDataError as e:
        raise ValueError(str(e)) from None
