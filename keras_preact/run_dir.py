"""The run directory: what training writes and evaluation, export and serving read.

One home for the file names, for the one way files are written (a temporary
name in the same folder, then a rename, so a reader never sees half a file)
and for the `ModelSpec`, the small JSON saved beside the model that says how
to rebuild it and how to feed it: builder and arguments, class names,
normalisation, evaluation resize/crop sizes and interpolation. Training
writes it; `python -m export --model_dir=DIR` and the serving client read it,
so no size, label or normalisation is restated by hand.

A training run's directory (`keras_preact.training.run`):

    config.json        the TrainConfig (a resumed run must match it)
    checkpoints/       tf.train checkpoints (resume)
    logs/              TensorBoard
    history.csv/.json  one row per epoch
    metrics.json       final test metrics
    model.keras        the trained model, float32, softmax head
    model.weights.h5   the same weights (for a builder call)
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

import contextlib
import dataclasses
import json
import os
import uuid

import tensorflow as tf

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


# ---------------------------------------------------------------- atomic files


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renamed onto `path` when the block succeeds.

    For writers that take a file name (`model.save`, `h5py.File`, tf2onnx).
    On an exception the temporary file is removed and `path` is left as it
    was. Works on local paths and on `tf.io.gfile` ones (e.g. `gs://`).

    >>> import tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(target).read()
    'done'
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    # Keep the file's extension last: Keras picks the format by it (.keras, .weights.h5).
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            with contextlib.suppress(tf.errors.OpError):
                tf.io.gfile.remove(tmp)


def atomic_write(path, data):
    """Writes `data` (str or bytes) to `path` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        with tf.io.gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)


def write_json(path, value):
    """`value` as indented JSON at `path`, atomically."""
    atomic_write(path, json.dumps(value, indent=1) + "\n")


# ------------------------------------------------------------------- the spec


@dataclasses.dataclass
class ModelSpec:
    """How to rebuild a trained model and how to feed it images.

    Attributes:
        builder: the `keras_preact` builder, e.g. `"ImageNetResNetV2"`.
        kwargs: its arguments (explicit `layout`, no `weights`: the trained
            weights are `model.weights.h5`).
        labels: the class names, in output order.
        normalization: how the model's preprocessing layer normalises raw
            [0, 255] RGB (`keras_preact.NORMALIZATIONS`).
        image_size: the training crop (a square side).
        eval_crop_sizes: evaluation centre-crop sizes; the first is the
            serving size. Empty: whole images resized to `image_size`, no
            border cropped (CIFAR-style nets).
        interpolation: resize interpolation before the crop.
        crop_fraction: crop / shorter side of the resize (None: the paper's
            224-from-256, and no resize at or above 320).
        dataset, data_dir: the training data, for int8 calibration images.
        weights: the initial weights the run started from (a description).
    """

    builder: str
    kwargs: dict
    labels: list
    normalization: str
    image_size: int
    eval_crop_sizes: list = dataclasses.field(default_factory=list)
    interpolation: str = "bilinear"
    crop_fraction: float | None = None
    dataset: str | None = None
    data_dir: str | None = None
    weights: str | None = None

    @property
    def crop_size(self):
        """The serving crop: the first eval crop size, else the training size."""
        return int(self.eval_crop_sizes[0] if self.eval_crop_sizes else self.image_size)

    @property
    def eval_preprocessing(self):
        """`{"interpolation", "crop_fraction"}`, as `keras_preact.data.make_dataset` takes it."""
        return {"interpolation": self.interpolation, "crop_fraction": self.crop_fraction}

    def resize_size(self, crop_size=None):
        """The shorter side to resize to before a centre crop of `crop_size` (default: serving)."""
        from keras_preact.data.crops import default_resize_size

        crop = self.crop_size if crop_size is None else int(crop_size)
        if not self.eval_crop_sizes and crop == self.image_size:
            return crop  # a net trained on whole images (CIFAR-style): no border to crop
        return default_resize_size(crop, self.crop_fraction)

    def build(self, weights=None, classifier_activation="softmax"):
        """The model, built by its builder (with `weights`, e.g. the run's `model.weights.h5`)."""
        import keras_preact

        builder = getattr(keras_preact, self.builder)
        return builder(weights=weights, classifier_activation=classifier_activation, **self.kwargs)

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
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{model_dir!r} has no {SPEC}: it is not a finished keras-preact training run "
            "(training writes it at the end). For a bare model file use the .keras path."
        )
    with tf.io.gfile.GFile(path) as f:
        return ModelSpec.from_dict(json.load(f))


def model_path(model_dir):
    """`<model_dir>/model.keras`, checked to exist."""
    path = os.path.join(os.fspath(model_dir), MODEL)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{model_dir!r} has no {MODEL}: training has not finished there.")
    return path
