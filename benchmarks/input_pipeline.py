"""Is the fused decode-and-crop training pipeline faster than keras-cv's, and than training?

Writes a folder of JPEG photos at ImageNet-like sizes (scikit-learn's and
scikit-image's bundled sample photos, re-encoded at quality 90), then measures
in one run:

* ours: `keras_preact.data.make_dataset("folder", "train", ...)`, which samples
  the Inception-style crop window from the JPEG header, decodes only that
  window (`tf.image.decode_and_crop_jpeg`), resizes it and flips, and records
  the names of unreadable images;
* the peer: keras-cv 0.9's `RandomCropAndResize` (area 0.08-1, aspect ratio
  3/4-4/3) on each image after a full `tf.io.decode_jpeg`, then `RandomFlip`
  on the batches, built as keras-cv's ImageNet training example builds it.
  keras-cv is a benchmark peer only, never a dependency: `make bench` installs
  it in `.venv-bench`. Without it, the peer is a tf.image equivalent (whole
  decode, `tf.image.crop_and_resize` of the same window distribution, flip),
  and the section says so. With keras-cv, the same keras-cv pipeline without
  `RandomFlip` is measured too (a breakdown row, no target);
* the ResNet-50 v2 training step (`keras_preact.ResNet50V2`, `tf.function`
  with a `GradientTape` and `CoupledSGD`, in-memory batches): how many images/s
  training consumes on the same cores, so pipeline / training says whether
  training ever waits on the data.

The pipelines alternate for `--rounds` rounds (the order swapped every
round); the best round of each counts (the machine may be shared), with the
ratios of images/s and of images per CPU second.

Prints one Markdown section (the benchmarks' contract, see
benchmarks/README.md) to stdout; progress goes to stderr. From the repository root:

    python benchmarks/input_pipeline.py                  # full settings
    python benchmarks/input_pipeline.py --num_images=64 --num_files=8 --batch_size=16 \\
        --rounds=1 --train_steps=1 --train_batch=2 --train_image_size=64   # smoke
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import target_line  # noqa: E402

import keras_preact  # noqa: E402
from keras_preact import training  # noqa: E402
from keras_preact.data import augment, make_dataset  # noqa: E402

try:  # a benchmark peer only: installed in .venv-bench, never a dependency
    import keras_cv
except ImportError:
    keras_cv = None

flags.DEFINE_integer("num_images", 1024, "images per timed round of each pipeline")
flags.DEFINE_integer("num_files", 64, "distinct JPEG files in the folder")
flags.DEFINE_integer("image_size", 224, "training crop size")
flags.DEFINE_integer("batch_size", 64, "images per batch of the pipelines")
flags.DEFINE_integer("rounds", 5, "alternating timed rounds per pipeline")
flags.DEFINE_integer("train_batch", 16, "images per ResNet-50 training step")
flags.DEFINE_integer("train_steps", 3, "timed training steps (after one warm-up step)")
flags.DEFINE_integer("train_image_size", 0, "training step input size (0: --image_size)")
flags.DEFINE_string(
    "train_model", "ResNet50V2", "keras-preact builder of the training step (the target's net)"
)
FLAGS = flags.FLAGS
FLAG_NAMES = (
    "num_images",
    "num_files",
    "image_size",
    "batch_size",
    "rounds",
    "train_batch",
    "train_steps",
    "train_image_size",
    "train_model",
)

# Issue 11's target for ours / keras-cv (whole pipelines, flip included); training
# waits on the data when pipeline / training is below 1.
TARGET_PEER = 2.5
TARGET_TRAINING = 1.0
SIZES = [(500, 375), (375, 500), (500, 333), (400, 400), (500, 400), (333, 500)]


def log(message):
    print(message, file=sys.stderr, flush=True)


def _stamp():
    """(wall-clock seconds, CPU seconds of this process)."""
    cpu = os.times()
    return time.perf_counter(), cpu.user + cpu.system


def write_photos(root, num_files):
    """`num_files` quality-90 JPEGs of real photos at ImageNet-like sizes in root/train/<class>/."""
    from PIL import Image
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    photos += [getattr(skdata, n)() for n in ("astronaut", "coffee", "chelsea", "rocket")]
    for i in range(num_files):
        image = Image.fromarray(photos[i % len(photos)]).convert("RGB")
        image = image.resize(SIZES[i % len(SIZES)], Image.BICUBIC)
        folder = os.path.join(root, "train", f"class_{i % 4}")
        os.makedirs(folder, exist_ok=True)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        with open(os.path.join(folder, f"{i:04d}.jpg"), "wb") as f:
            f.write(buffer.getvalue())


def _files(root):
    """(paths, labels) of the folder's JPEGs, shuffled and repeated like ours."""
    paths = sorted(tf.io.gfile.glob(os.path.join(root, "train", "*", "*.jpg")))
    labels = [int(os.path.basename(os.path.dirname(p)).split("_")[1]) for p in paths]
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds.shuffle(len(paths), seed=0).repeat()


def _decode(path, label):
    return tf.io.decode_jpeg(tf.io.read_file(path), channels=3), label


def keras_cv_dataset(root, batch_size, image_size, flip=True):
    """keras-cv's ImageNet training example: decode, crop per image, batch, flip the batches.

    examples/training/classification/imagenet/basic_training.py of keras-cv:
    `imagenet.load` decodes in a `map`, `RandomCropAndResize` runs in a second
    `map` on each image (dict inputs), then `batch` and the other layers
    (here `RandomFlip(mode="horizontal")`) in a `map` on the batches. Unseeded,
    as there. `flip=False` leaves `RandomFlip` out (to show what it costs).
    """
    crop = keras_cv.layers.RandomCropAndResize(
        target_size=(image_size, image_size),
        crop_area_factor=augment.AREA_RANGE,
        aspect_ratio_factor=augment.ASPECT_RATIO_RANGE,
    )
    random_flip = keras_cv.layers.RandomFlip(mode="horizontal")

    def crop_and_resize(image, label):
        inputs = crop({"images": image, "labels": label})
        return inputs["images"], inputs["labels"]

    def augment_batch(images, labels):
        inputs = random_flip({"images": images, "labels": labels})
        return inputs["images"], inputs["labels"]

    ds = _files(root).map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(crop_and_resize, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=True)
    if flip:
        ds = ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def tf_image_dataset(root, batch_size, image_size, seed=0):
    """Without keras-cv: what `RandomCropAndResize` does, in tf.image, then a flip.

    The whole image decoded and cast to float32, `tf.image.crop_and_resize` of
    a window with ours' distribution (`augment.sample_crop_window`), a
    stateless flip per image.
    """
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def load(element, s):
        crop_seed, flip_seed = augment.split_seed(s, 2)
        image, label = _decode(*element)
        shape = tf.shape(image)
        top, left, h, w = tf.unstack(
            tf.cast(augment.sample_crop_window(shape, crop_seed), tf.float32)
        )
        height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        box = tf.stack([top / height, left / width, (top + h) / height, (left + w) / width])
        image = tf.image.crop_and_resize(
            tf.cast(image[None], tf.float32), box[None], [0], [image_size, image_size]
        )[0]
        return tf.image.stateless_random_flip_left_right(image, flip_seed), label

    ds = tf.data.Dataset.zip(_files(root), seeds).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(ds, num_images, batch_size):
    """(images/s, CPU ms per image of this process) over `num_images` images of a new iterator."""
    iterator = iter(ds)
    for _ in range(2):  # warm-up: tracing, thread pools, page cache
        next(iterator)
    steps = max(1, num_images // batch_size)
    wall, cpu = _stamp()
    for _ in range(steps):
        images = next(iterator)[0]
    images.numpy()
    end_wall, end_cpu = _stamp()
    del iterator  # stops its background threads before the next measurement
    n = steps * batch_size
    return n / (end_wall - wall), 1e3 * (end_cpu - cpu) / n


def train_net():
    """The training step's net in words: "ResNet-50 v2" (`--train_model`'s default, the
    targets' net) or the builder `--train_model` names (a smoke run's smaller one)."""
    return "ResNet-50 v2" if FLAGS.train_model == "ResNet50V2" else FLAGS.train_model


def training_steps(batch, size, steps):
    """[(images/s, CPU ms per image)] of `steps` training steps of `--train_model` after a
    warm-up step."""
    keras.utils.set_random_seed(0)
    model = getattr(keras_preact, FLAGS.train_model)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    optimizer = training.CoupledSGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, 1000, batch).astype("int32"))

    @tf.function(jit_compile=False)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        variables = model.trainable_variables
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    log(f"{train_net()} training step, batch {batch} at {size}x{size}: warm-up (tracing)")
    step(images, labels).numpy()
    results = []
    for i in range(steps):
        wall, cpu = _stamp()
        step(images, labels).numpy()
        end_wall, end_cpu = _stamp()
        results.append((batch / (end_wall - wall), 1e3 * (end_cpu - cpu) / batch))
        log(f"training step {i + 1}/{steps}: {results[-1][0]:.2f} images/s")
    return results


def command():
    args = " ".join(f"--{name}={FLAGS[name].value}" for name in FLAG_NAMES)
    return f"python benchmarks/input_pipeline.py {args}"


def _n(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _best(runs):
    return max(r for r, _ in runs), min(c for _, c in runs)


def section(results, train, peer_label, peer_how):
    rate, cpu = {}, {}
    for name, runs in results.items():
        rate[name], cpu[name] = _best(runs)
    train_rate, train_cpu = _best(train)
    ratio = rate["ours"] / rate["peer"]
    feed = rate["ours"] / train_rate
    train_size = FLAGS.train_image_size or FLAGS.image_size
    cores = os.cpu_count()
    gpus = tf.config.list_physical_devices("GPU")
    env = ", ".join(
        [f"TensorFlow {tf.__version__}", f"Keras {keras.__version__}"]
        + ([f"keras-cv {keras_cv.__version__}"] if keras_cv else [])
        + [f"{cores} CPU cores" + (f" and {len(gpus)} GPU(s)" if gpus else ", no GPU")]
    )
    peer_target = (
        "ours / keras-cv RandomCropAndResize"
        if keras_cv
        else "ours / tf.image equivalent of RandomCropAndResize (keras-cv not installed)"
    )
    lines = [
        "## Input pipeline",
        "",
        f"Images/s of training input pipelines on {FLAGS.num_files} JPEG photos (quality 90, "
        "500x375 to 333x500 like ImageNet's, read from the page cache), each image an "
        f"Inception-style random-resized crop to {FLAGS.image_size}x{FLAGS.image_size} "
        "(area 8-100%, aspect ratio 3/4-4/3) and a random horizontal flip, in batches of "
        f"{FLAGS.batch_size} float32 images. Ours is `keras_preact.data.make_dataset("
        '"folder", "train", seed=0, repeat=True)`: the window is sampled from the JPEG '
        "header and only it is decoded (`tf.image.decode_and_crop_jpeg`), then resized, "
        f"flipped, and unreadable images are skipped and recorded by name. Peer: "
        f"{peer_label}; it {peer_how} The pipelines alternate for "
        f"{_n(FLAGS.rounds, 'round')} of "
        f"{FLAGS.num_images} images each (the order swapped every round, each round a new "
        "iterator after 2 warm-up batches); the best round counts. CPU ms/image is this "
        "process's CPU time over all threads, steadier than the wall clock on a shared "
        f"machine. The target, ours / peer >= {TARGET_PEER}x, is issue 11's and compares "
        "whole pipelines as their users build them, flip included; with keras-cv, the "
        "breakdown row (its pipeline without `RandomFlip`) shows how much of the ratio is "
        "the fused decode itself. The last rows are the "
        f"{train_net()} training step (`keras_preact.{FLAGS.train_model}`, batch "
        f"{FLAGS.train_batch} "
        f"of in-memory {train_size}x{train_size} images, `tf.function` with a "
        "`GradientTape` and `CoupledSGD`, no XLA; best of "
        f"{_n(FLAGS.train_steps, 'step')} after a warm-up step): pipeline / training > "
        f"{TARGET_TRAINING:.0f}x means training never waits on the data. Both use all "
        f"{cores} cores of this machine, each measured alone, so the ratio is per the cores "
        "of this machine: the pipeline needs about 1/ratio of them to keep up with training "
        "(on GPUs see the GPU training section). "
        f"{env}. Command: `{command()}`.",
        "",
        "| Measured | Images/s (best) | CPU ms/image (best) | Images/s per round or step |",
        "|---|---:|---:|---|",
    ]
    labels = {
        "ours": "ours: fused decode-and-crop (`make_dataset`)",
        "peer": f"{peer_label} + `RandomFlip`" if keras_cv else peer_label,
        "crop_only": "breakdown: the same keras-cv pipeline without `RandomFlip`",
    }
    for name in results:
        runs = ", ".join(f"{r:.0f}" for r, _ in results[name])
        lines.append(f"| {labels[name]} | {rate[name]:.0f} | {cpu[name]:.2f} | {runs} |")
    lines.append(
        f"| ours / peer | {ratio:.2f}x | {cpu['peer'] / cpu['ours']:.2f}x "
        "(images per CPU second) | |"
    )
    if "crop_only" in results:
        lines.append(
            f"| ours / peer without `RandomFlip` | {rate['ours'] / rate['crop_only']:.2f}x | "
            f"{cpu['crop_only'] / cpu['ours']:.2f}x (images per CPU second) | |"
        )
    steps = ", ".join(f"{r:.2f}" for r, _ in train)
    lines.append(
        f"| {train_net()} training step (batch {FLAGS.train_batch}, {train_size}x{train_size}) "
        f"| {train_rate:.2f} | {train_cpu:.1f} | {steps} |"
    )
    lines.append(f"| pipeline (ours) / training step | {feed:.0f}x | | |")
    lines += [
        "",
        target_line(
            f"{peer_target}, images/s", f"{ratio:.2f}x", f">= {TARGET_PEER}x", ratio >= TARGET_PEER
        ),
        target_line(
            f"pipeline / {train_net()} training step, images/s",
            f"{feed:.0f}x",
            f"> {TARGET_TRAINING:.0f}x",
            feed > TARGET_TRAINING,
        ),
    ]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    f = FLAGS
    if keras_cv:
        peer_label = f"keras-cv {keras_cv.__version__} `RandomCropAndResize`"
        peer_how = (
            "is built as keras-cv's ImageNet training example builds it: `tf.io.decode_jpeg` "
            "of the whole image in a `map`, `keras_cv.layers.RandomCropAndResize("
            "crop_area_factor=(0.08, 1.0), aspect_ratio_factor=(3/4, 4/3))` on each image "
            "(dict inputs) in a second `map`, then `batch` and `keras_cv.layers.RandomFlip("
            '"horizontal")` in a `map` on the batches; maps parallel (AUTOTUNE), unseeded '
            "as there. The breakdown row is the same pipeline without `RandomFlip` (no "
            "target): keras-cv's flip builds full-size float masks and flips every batch "
            "both ways, and that is much of the peer's cost."
        )
    else:
        peer_label = "tf.image equivalent (keras-cv not installed)"
        peer_how = (
            "decodes the whole image (`tf.io.decode_jpeg`), casts it to float32 and takes "
            "`tf.image.crop_and_resize` of a window with ours' distribution, then a flip: "
            "what keras-cv's `RandomCropAndResize` does, written in tf.image because "
            "keras-cv is not installed here (`make bench` installs it in `.venv-bench`)."
        )
    log(f"peer: {peer_label}")
    with tempfile.TemporaryDirectory() as root:
        write_photos(root, f.num_files)
        pipelines = {
            "ours": make_dataset(
                "folder",
                "train",
                data_dir=root,
                batch_size=f.batch_size,
                image_size=f.image_size,
                seed=0,
                repeat=True,
            ),
            "peer": (keras_cv_dataset if keras_cv else tf_image_dataset)(
                root, f.batch_size, f.image_size
            ),
        }
        if keras_cv:  # a breakdown of the peer, not a target
            pipelines["crop_only"] = keras_cv_dataset(root, f.batch_size, f.image_size, flip=False)
        results = {name: [] for name in pipelines}
        for r in range(f.rounds):
            order = list(pipelines) if r % 2 == 0 else list(reversed(pipelines))
            for name in order:
                results[name].append(measure(pipelines[name], f.num_images, f.batch_size))
            rates = ", ".join(f"{name} {runs[-1][0]:.0f}" for name, runs in results.items())
            log(f"round {r + 1}/{f.rounds}, images/s: {rates}")
    train = training_steps(f.train_batch, f.train_image_size or f.image_size, f.train_steps)
    print(section(results, train, peer_label, peer_how))


if __name__ == "__main__":
    app.run(main)
