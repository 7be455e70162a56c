"""The run directory: what training writes and evaluation, export and serving read.

One home for the file names and for the `ModelSpec`, the small JSON saved
beside the model that says how to rebuild it and how to feed it: the model's
class and config, class names, normalisation, evaluation resize/crop sizes
and interpolation. Files are written the one way `keras_preact.files` writes
them (a temporary name in the same folder, then a rename, so a reader never
sees half a file). Training writes the spec; `python -m export --model_dir=DIR` and the serving client read it,
so no size, label or normalisation is restated by hand.

A training run's directory (`keras_preact.training.run`):

    config.json        the TrainConfig (a resumed run must match it)
    checkpoints/       tf.train checkpoints (resume)
    logs/              TensorBoard
    history.csv/.json  one row per epoch
    metrics.json       final test metrics
    model.keras        the trained model, float32, softmax head (it carries its config)
    model.weights.h5   the same weights (for a builder call, or ModelSpec.build)
    spec.json          the ModelSpec
    labels.txt         class names, one per line
    skipped_files.txt  images the input skipped as unreadable, one per line (if any)

Example (a spec written and read back; the directory need not hold a model):

>>> import tempfile
>>> spec = ModelSpec("CIFARResNetV2", {"depth": 20, "classes": 3}, labels=["a", "b", "c"],
...                  normalization="cifar", image_size=32)
>>> run = tempfile.mkdtemp()
>>> write_spec(run, spec)
>>> read_spec(run).crop_size, read_spec(run).resize_size()
(32, 32)
"""

from __future__ import annotations

import dataclasses
import json
import os

from keras_preact import models
from keras_preact.files import atomic_path as atomic_path  # the run's writers, for its users
from keras_preact.files import atomic_write, exists, open_file, write_json
from keras_preact.options import EvalProtocol
from keras_preact.weights import load_weights

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY_CSV = "history.csv"
HISTORY_JSON = "history.json"
METRICS = "metrics.json"
MODEL = "model.keras"
WEIGHTS = "model.weights.h5"
SPEC = "spec.json"
LABELS = "labels.txt"
SKIPPED_FILES = "skipped_files.txt"

SPEC_FORMAT = 1


# ------------------------------------------------------------------- the spec


@dataclasses.dataclass
class ModelSpec:
    """How to rebuild a trained model and how to feed it images.

    Attributes:
        builder: the model's class in `keras_preact`, e.g. `"ImageNetResNetV2"`.
        kwargs: the model's config (`model.get_config()`: explicit layout, eval
            protocol; no weights: the trained weights are `model.weights.h5`).
            Runs of keras-preact 0.1.0 saved the builder's arguments, which
            build the same model.
        labels: the class names, in output order.
        normalization: how the model's preprocessing layer normalises raw
            [0, 255] RGB (`keras_preact.NORMALIZATIONS`).
        image_size: the training crop (a square side).
        eval_crop_sizes: evaluation centre-crop sizes; the first is the
            serving size. Empty: whole images resized to `image_size`, no
            border cropped (CIFAR-style nets).
        interpolation, crop_fraction: the model's eval protocol
            (`eval_protocol`), as its config states it.
        dataset, data_dir: the training data, for int8 calibration images.
        weights: the initial weights the run started from (a description).
    """

    builder: str
    kwargs: dict
    labels: list
    normalization: str
    image_size: int
    eval_crop_sizes: list = dataclasses.field(default_factory=list)
    interpolation: str = EvalProtocol.interpolation
    crop_fraction: float | None = EvalProtocol.crop_fraction
    dataset: str | None = None
    data_dir: str | None = None
    weights: str | None = None

    @classmethod
    def of_model(cls, model, **fields):
        """The spec of a keras-preact `model` (a `ResNetV2`), with the run's other `fields`."""
        protocol = model.eval_protocol
        config = {k: v for k, v in model.get_config().items() if k not in ("name", "trainable")}
        return cls(
            builder=type(model).__name__,
            kwargs=config,
            normalization=model.normalization,
            interpolation=protocol.interpolation,
            crop_fraction=protocol.crop_fraction,
            **fields,
        )

    @property
    def crop_size(self):
        """The serving crop: the first eval crop size, else the training size."""
        return int(self.eval_crop_sizes[0] if self.eval_crop_sizes else self.image_size)

    @property
    def eval_protocol(self):
        """The model's `EvalProtocol` (interpolation and crop fraction)."""
        return EvalProtocol(interpolation=self.interpolation, crop_fraction=self.crop_fraction)

    @property
    def eval_preprocessing(self):
        """`{"interpolation", "crop_fraction"}`, as `keras_preact.data.make_dataset` takes it."""
        return self.eval_protocol.crop_settings()

    def resize_size(self, crop_size=None):
        """The shorter side to resize to before a centre crop of `crop_size` (default: serving)."""
        crop = self.crop_size if crop_size is None else int(crop_size)
        if not self.eval_crop_sizes and crop == self.image_size:
            return crop  # a net trained on whole images (CIFAR-style): no border to crop
        return self.eval_protocol.resize_size(crop)

    def build(self, weights=None, classifier_activation="softmax"):
        """The model, built from its config (with `weights`, e.g. the run's `model.weights.h5`)."""
        model_class = getattr(models, self.builder)
        config = dict(self.kwargs, classifier_activation=classifier_activation)
        model = model_class.from_config(config)
        if weights is not None:
            load_weights(model, weights)
        return model

    def to_dict(self):
        return {"format": SPEC_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, value):
        value = dict(value)
        if value.pop("format", SPEC_FORMAT) > SPEC_FORMAT:
            raise ValueError("This spec.json was written by a newer keras-preact; upgrade it.")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})


def write_spec(model_dir, spec):
    """Writes `spec.json` and `labels.txt` into `model_dir` (atomically)."""
    write_json(os.path.join(model_dir, SPEC), spec.to_dict())
    atomic_write(os.path.join(model_dir, LABELS), "".join(f"{n}\n" for n in spec.labels))


def read_spec(model_dir):
    """The `ModelSpec` of a run directory; FileNotFoundError naming what is missing."""
    path = os.path.join(os.fspath(model_dir), SPEC)
    if not exists(path):
        raise FileNotFoundError(
            f"{model_dir!r} has no {SPEC}: it is not a finished keras-preact training run "
            "(training writes it at the end). For a bare model file use the .keras path."
        )
    with open_file(path) as f:
        return ModelSpec.from_dict(json.load(f))


def model_path(model_dir):
    """`<model_dir>/model.keras`, checked to exist."""
    path = os.path.join(os.fspath(model_dir), MODEL)
    if not exists(path):
        raise FileNotFoundError(f"{model_dir!r} has no {MODEL}: training has not finished there.")
    return path
