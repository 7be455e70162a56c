"""Batch prediction: top-k labels (and pooled features) for image files, with the model's eval crop.

Installed: `keras-preact-predict`; from a checkout: `python -m keras_preact.predict`.

    keras-preact-predict --model_dir=runs/cifar --output=preds.csv photos/
    keras-preact-predict --model_path=model.keras --output=preds.jsonl --tta=flip a.jpg b.png
    keras-preact-predict --builder=ResNet50V2 --weights=resnet50v2.weights.h5 \\
        --output=preds.csv --features=embeddings.npy --tta=ten_crop photos/

Positional arguments are image files or folders (searched recursively for
.jpg, .jpeg, .png, .gif and .bmp files, in sorted order). Each image is
decoded, resized and centre-cropped as the model evaluates (the
`ServingPlan` that export serves: a run's spec, else the weights source's
protocol), and gets one row in `--output`: CSV (`path`, then `label_i`,
`score_i`, `class_i` for i = 1..top_k) or, for a name ending in `.jsonl` or
`.json`, JSON lines (`{"path", "labels", "scores", "classes"}`); without
`--output` the CSV goes to stdout. `--features=FILE.npy` also saves the pooled
embeddings (the global-average-pool output), one float32 row per image in the
output's row order.

`--tta=flip` averages the probabilities (and features) of the eval crop and
its mirror; `--tta=ten_crop` those of fb.resnet.torch's ten crops (the centre
and four corner crops of the resized image, and their mirrors).

An image that cannot be read or decoded gets one line on stderr naming it and
is left out (no row); the count is printed at the end. The command exits
non-zero only when no image could be predicted (or the model cannot be loaded).

Library:

>>> result = predict_files("runs/cifar", ["photos/"], top_k=3, tta="flip")  # doctest: +SKIP
>>> result.rows[0]  # doctest: +SKIP
{'path': 'photos/cat.jpg', 'labels': ['cat', 'dog', 'deer'], 'scores': [...], 'classes': [3, 5, 4]}
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_preact import console, files
from keras_preact.data.crops import TTA_MODES, decode_image, tta_crops
from keras_preact.export import model as model_lib
from keras_preact.export.client import image_problem, refusal_reason
from keras_preact.options import check_choice
from keras_preact.preprocessing import normalization_stats

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
JSON_LINES = (".jsonl", ".json")


@dataclasses.dataclass
class Predictions:
    """What `predict_files` answers.

    `rows`: one dict per predicted image, in input order (`path`, top-k
    `labels`, `scores`, `classes`); `features`: float32 `[len(rows), D]`
    pooled embeddings (None unless asked for); `skipped`: `[(path, why)]` of
    the images that could not be read or decoded.
    """

    rows: list
    features: np.ndarray | None
    skipped: list


def image_files(paths):
    """The image files that `paths` name: files as given, folders searched recursively.

    A folder contributes its files with an image extension (`IMAGE_EXTENSIONS`,
    any case) in sorted order; a path that is not a folder is kept as it is
    (prediction then says why it could not be read, if it cannot).
    """
    found = []
    for path in [os.fspath(p) for p in paths]:
        if not os.path.isdir(path):
            found.append(path)
            continue
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            found += [
                os.path.join(folder, name)
                for name in sorted(names)
                if name.lower().endswith(IMAGE_EXTENSIONS)
            ]
    return found


def predict_files(
    source,
    paths,
    top_k=5,
    tta="none",
    batch_size=32,
    features=False,
    *,
    labels=None,
    crop_size=None,
    resize_size=None,
    interpolation=None,
    normalization=None,
    on_skip=None,
    on_progress=None,
):
    """Top-k predictions (and pooled features) for image files; unreadable images are skipped.

    Args:
        source: a Keras model, `.keras` file, training run directory, or a
            `keras_preact.export.model.ServingPlan` already prepared.
        paths: image files and folders (`image_files`).
        top_k: labels and scores per row (at most the number of classes).
        tta: `"none"`, `"flip"` or `"ten_crop"` (`keras_preact.data.crops.tta_crops`):
            the probabilities and features are means over the views.
        batch_size: images per model call (each brings `TTA_VIEWS[tta]` crops).
        features: also return the global-average-pool outputs.
        labels, crop_size, resize_size, interpolation, normalization: passed to
            `prepare` (each defaults to what the run or the model says).
        on_skip: called `on_skip(path, why)` as each unreadable image is found.
        on_progress: called `on_progress(done, total)` after each batch.

    Returns:
        `Predictions(rows, features, skipped)`.
    """
    check_choice("tta", tta, TTA_MODES)
    if int(top_k) < 1 or int(batch_size) < 1:
        raise ValueError(f"top_k ({top_k}) and batch_size ({batch_size}) must be >= 1.")
    plan = source
    if not isinstance(plan, model_lib.ServingPlan):
        plan = model_lib.prepare(
            source, labels, crop_size, resize_size, interpolation, normalization
        )
    names = image_files(paths)
    run = _model_function(plan, features)
    result = Predictions([], [] if features else None, [])
    expected = 0
    for indices, crops in _crops(names, plan, tta, batch_size):
        indices = indices.numpy().tolist()
        for index in indices:  # in order: a number missing before it did not load
            for missing in range(expected, index):
                _skip(result, names[missing], on_skip)
            expected = index + 1
        outputs = run(crops)
        result.rows += _rows([names[i] for i in indices], outputs[0].numpy(), plan.labels, top_k)
        if features:
            result.features.append(outputs[1].numpy())
        if on_progress:
            on_progress(expected, len(names))
    for missing in range(expected, len(names)):
        _skip(result, names[missing], on_skip)
    if on_progress:
        on_progress(len(names), len(names))
    if features:
        result.features = _stacked(result.features)
    return result


def _skip(result, path, on_skip):
    why = unreadable_reason(path)
    result.skipped.append((path, why))
    if on_skip:
        on_skip(path, why)


def _stacked(arrays):
    if not arrays:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(arrays).astype(np.float32)


def _crops(names, plan, tta, batch_size):
    """Batches of `(indices, views [B, V, crop, crop, 3])`; images that fail are left out.

    Reading and decoding run in parallel, in order (`deterministic=True`);
    `ignore_errors` drops an image whose file or decoder fails, so its index is
    missing from the batches.
    """
    if not names:
        return []

    def load(index, path):
        image = decode_image(tf.io.read_file(path))
        views = tta_crops(image, tta, plan.crop_size, plan.resize_size, plan.interpolation)
        return index, views

    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(names), dtype=tf.int64), tf.constant(names, dtype=tf.string))
    )
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)


def pooled_layer(model):
    """The model's last global-average-pool layer (`avg_pool` in keras-preact's nets)."""
    pools = [
        layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)
    ]
    if not pools:
        raise ValueError(
            f"Model {model.name!r} has no global-average-pool layer, so it has no pooled "
            "features to save; leave out --features."
        )
    return pools[-1]


def _model_function(plan, with_features):
    """A traced `run(views [B, V, H, W, 3])` -> `[probabilities, (features)]`, each a mean over V."""
    model = plan.model
    outputs = [model.outputs[0]]
    if with_features:
        outputs.append(pooled_layer(model).output)
    net = keras.Model(model.input, outputs, name=f"{model.name}_predict")
    stats = normalization_stats(plan.normalization) if plan.normalization is not None else None
    size = plan.crop_size

    @tf.function(input_signature=[tf.TensorSpec([None, None, size, size, 3], tf.float32)])
    def run(views):
        shape = tf.shape(views)
        x = tf.reshape(views, [-1, size, size, 3])
        if stats is not None:
            x = (x - stats[0]) / stats[1]
        answers = net(x, training=False)
        answers = answers if isinstance(answers, (list, tuple)) else [answers]
        return [
            tf.reduce_mean(tf.reshape(tf.cast(a, tf.float32), [shape[0], shape[1], -1]), axis=1)
            for a in answers
        ]

    return run


def _rows(paths, probabilities, labels, top_k):
    k = min(int(top_k), probabilities.shape[-1])
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [
        {
            "path": path,
            "labels": [labels[c] for c in classes],
            "scores": [float(p[c]) for c in classes],
            "classes": [int(c) for c in classes],
        }
        for path, p, classes in zip(paths, probabilities, order)
    ]


def unreadable_reason(path):
    """Why an image file could not be predicted, as a phrase after its name.

    >>> unreadable_reason("/no/such.jpg")
    'cannot be read (No such file or directory)'
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    problem = image_problem(data)
    if problem:
        return problem
    try:
        decode_image(data)
    except (tf.errors.OpError, ValueError) as e:
        return f"could not be decoded ({refusal_reason(getattr(e, 'message', e))})"
    return "could not be decoded"


# ------------------------------------------------------------------------------ output


def rows_text(rows, json_lines=False):
    """The rows as CSV (a header, then `path`, `label_i`, `score_i`, `class_i`) or JSON lines."""
    if json_lines:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    k = max((len(row["labels"]) for row in rows), default=0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path"] + [f"{f}_{i}" for i in range(1, k + 1) for f in _CSV_FIELDS])
    for row in rows:
        cells = [row["path"]]
        for label, score, index in zip(row["labels"], row["scores"], row["classes"]):
            cells += [label, float(score), index]
        writer.writerow(cells)
    return out.getvalue()


_CSV_FIELDS = ("label", "score", "class")


def write_rows(path, rows):
    """Writes the rows to `path` (JSON lines for `.jsonl`/`.json`, else CSV; UTF-8), atomically."""
    text = rows_text(rows, json_lines=os.fspath(path).lower().endswith(JSON_LINES))
    files.atomic_write(path, text.encode("utf-8"))


def write_features(path, features):
    """Saves the features as a `.npy` file at `path` exactly (no suffix added), atomically."""
    with files.atomic_path(path, needed=features.nbytes + 128) as tmp:
        with files.open_file(tmp, "wb") as f:
            np.save(f, features)


class Progress:
    """Progress on stderr for a long list: a bar redrawn in place on a terminal, plain lines
    (at each tenth) elsewhere; nothing for a list of one batch or less.

    `note(line)` prints a line (a skipped image) without breaking the bar.
    """

    def __init__(self, total, long_after, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.shown = total > long_after
        self.terminal = _is_terminal(self.stream)
        self.start = time.monotonic()
        self.done = 0
        self.tenths = 0

    def note(self, line):
        """Prints `line` (on its own line, above the bar)."""
        if self.shown and self.terminal:
            self.stream.write("\r\033[K")
        self.stream.write(line + "\n")
        if self.shown and self.terminal and self.done:
            self._draw()
        self.stream.flush()

    def update(self, done, total=None):
        """`done` of the images are through (`on_progress`)."""
        self.done = done
        if not self.shown:
            return
        if self.terminal:
            self._draw()
        elif done * 10 // max(self.total, 1) > self.tenths:
            self.tenths = done * 10 // max(self.total, 1)
            self.stream.write(self._status() + "\n")
        self.stream.flush()

    def close(self):
        """Ends the bar's line."""
        if self.shown and self.terminal:
            self.stream.write("\n")
            self.stream.flush()

    def _status(self):
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        return f"{self.done}/{self.total} images, {rate:.1f} images/s"

    def _draw(self):
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "=" * filled + "." * (width - filled)
        self.stream.write(f"\r\033[K[{bar}] {self._status()}")


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# ------------------------------------------------------------------------ command line


def define_flags():
    """Defines the prediction flags on absl's FLAGS (once)."""
    from absl import flags

    if "tta" in flags.FLAGS and "features" in flags.FLAGS:
        return
    flags.DEFINE_string("model_dir", None, "A training run's directory (model.keras, spec.json).")
    flags.DEFINE_string("model_path", None, "Or a .keras file.")
    flags.DEFINE_string("builder", None, "Or a keras-preact builder name, e.g. ResNet50V2.")
    flags.DEFINE_string("weights", None, "Weights file (.weights.h5 / .keras) for --builder.")
    flags.DEFINE_string(
        "builder_kwargs", "{}", "JSON of extra builder arguments, e.g. '{\"classes\": 10}'."
    )
    flags.DEFINE_string(
        "output",
        None,
        "CSV file, or JSON lines for a name ending in .jsonl/.json (default: CSV on stdout).",
    )
    flags.DEFINE_string("features", None, "Also save the pooled embeddings here (.npy).")
    flags.DEFINE_integer("top_k", 5, "Labels and scores per image.")
    flags.DEFINE_enum("tta", "none", list(TTA_MODES), "Test-time augmentation (mean over views).")
    flags.DEFINE_integer("batch_size", 32, "Images per model call.")
    flags.DEFINE_string(
        "labels", None, "Class names file, one per line (default: the run's, or labels.txt beside)."
    )
    flags.DEFINE_integer("crop_size", None, "Eval crop (default: the run's / the model's).")
    flags.DEFINE_integer("resize_size", None, "Shorter side before the crop (default: the run's).")
    flags.DEFINE_enum(
        "interpolation", None, ["bilinear", "bicubic"], "Resize interpolation (default: the run's)."
    )
    flags.DEFINE_string(
        "normalization", None, "Only for models built with include_preprocessing=False."
    )
    flags.DEFINE_boolean("verbose", False, "Show TensorFlow's own logs too (-v for short).")


def main(argv):
    """Predicts the images the arguments name; writes the rows (and features); exits non-zero
    only when no image could be predicted."""
    from absl import app, flags

    FLAGS = flags.FLAGS
    if len(argv) < 2:
        raise app.UsageError("Give one or more image files or folders of images.")
    console.quiet_python_logs()
    if line := console.device_line():
        print(line, file=sys.stderr)
    names = image_files(argv[1:])
    if not names:
        sys.exit(
            f"predict: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(argv[1:])}."
        )
    try:
        plan = model_lib.prepare(
            _source(FLAGS),
            FLAGS.labels,
            FLAGS.crop_size,
            FLAGS.resize_size,
            FLAGS.interpolation,
            FLAGS.normalization,
        )
    except (ValueError, OSError) as e:
        sys.exit(f"predict: {e}")
    # Our lines go to a copy of stderr taken here: while images are decoded, what native code
    # prints there (libjpeg's "Unsupported marker type" warnings) is hidden, unless -v.
    stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    progress = Progress(len(names), long_after=FLAGS.batch_size, stream=stream)
    started = time.monotonic()
    try:
        with _native_output_hidden():
            result = predict_files(
                plan,
                names,
                FLAGS.top_k,
                FLAGS.tta,
                FLAGS.batch_size,
                features=bool(FLAGS.features),
                on_skip=lambda path, why: progress.note(f"{path} {why}: skipped."),
                on_progress=progress.update,
            )
    except (ValueError, OSError) as e:
        sys.exit(f"predict: {e}")
    finally:
        progress.close()
        stream.close()
    _finish(FLAGS, plan, result, time.monotonic() - started)


def _native_output_hidden():
    """Hides what native code writes to stderr inside the block (shown if it fails), unless -v."""
    if console.wants_tensorflow_logs():
        return contextlib.nullcontext()
    return console.native_output_hidden()


def _source(FLAGS):
    """What to predict with: a run directory, a .keras file or a builder call (exactly one)."""
    builder_kwargs = {}
    if FLAGS.builder:  # only a builder call reads --builder_kwargs
        try:
            builder_kwargs = json.loads(FLAGS.builder_kwargs)
        except json.JSONDecodeError as e:
            raise ValueError(f"--builder_kwargs is not valid JSON: {e}") from None
    return model_lib.flag_source(FLAGS, builder_kwargs)


def _finish(FLAGS, plan, result, seconds):
    """Writes the rows and features; one summary line on stderr; exit 1 if nothing was predicted."""
    total = len(result.rows) + len(result.skipped)
    if not result.rows:
        sys.exit(f"predict: no image could be predicted ({total} given, each named above).")
    try:
        if FLAGS.output:
            write_rows(FLAGS.output, result.rows)
        else:
            sys.stdout.write(rows_text(result.rows))
        if FLAGS.features:
            write_features(FLAGS.features, result.features)
    except OSError as e:
        sys.exit(f"predict: {e}")
    written = [p for p in (FLAGS.output, FLAGS.features) if p]
    skipped = f" {len(result.skipped)} skipped (named above)." if result.skipped else ""
    print(
        f"Predicted {len(result.rows)} of {total} images in {seconds:.1f} s ({plan.crop_size}x"
        f"{plan.crop_size} crop from {plan.resize_size}, {plan.interpolation}, tta={FLAGS.tta})"
        + (f": {', '.join(written)}." if written else ".")
        + skipped,
        file=sys.stderr,
    )


def usage():
    """`--help`: what the command does, then its flags."""
    return console.command_help(__doc__, __name__)


def run():
    """The `keras-preact-predict` console script."""
    define_flags()
    console.run(main, usage)


if __name__ == "__main__":
    run()
