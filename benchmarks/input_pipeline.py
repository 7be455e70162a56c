"""Is the fused decode-and-crop training pipeline faster than decoding whole images first?

Writes a folder of JPEG photos at ImageNet-like sizes (scikit-learn's and
scikit-image's bundled sample photos, re-encoded), then measures in one run the
images/s of

* ours: `keras_preact.data.make_dataset("folder", "train", ...)`, which samples
  the Inception-style crop window from the JPEG header and decodes only that
  window (`tf.image.decode_and_crop_jpeg`), and
* the peer: the same files decoded whole, then a random-resized crop of the
  decoded image (same window distribution, `tf.image.crop_and_resize`) and a
  flip. That is what keras-cv's `RandomCropAndResize` layer does after a
  full decode; keras-cv is end-of-life and not a dependency, so the peer is
  written here with tf.image.

The two pipelines alternate for `--rounds` rounds; the best round of each is
reported with the ratios (ours / peer; > 1 means ours is faster) of images/s
and of images per CPU second. On a shared machine the wall-clock figure is
noisy; CPU time per image is the steadier one.

    python benchmarks/input_pipeline.py --num_images 512 --rounds 3
"""

from __future__ import annotations

import io
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_preact.data import augment, make_dataset  # noqa: E402

flags.DEFINE_integer("num_images", 512, "images per timed pass")
flags.DEFINE_integer("num_files", 64, "distinct JPEG files in the folder")
flags.DEFINE_integer("image_size", 224, "training crop size")
flags.DEFINE_integer("batch_size", 64, "images per batch")
flags.DEFINE_integer("rounds", 3, "alternating timed rounds per pipeline")

SIZES = [(500, 375), (375, 500), (500, 333), (400, 400), (500, 400), (333, 500)]


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


def peer_dataset(root, batch_size, image_size, seed=0):
    """Decode the whole JPEG, then a random-resized crop on pixels (keras-cv style)."""
    files = sorted(tf.io.gfile.glob(os.path.join(root, "train", "*", "*.jpg")))
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed).repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def load(path, s):
        crop_seed, flip_seed = augment.split_seed(s, 2)
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        shape = tf.shape(image)
        top, left, h, w = tf.unstack(
            tf.cast(augment.sample_crop_window(shape, crop_seed), tf.float32)
        )
        height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        box = tf.stack([top / height, left / width, (top + h) / height, (left + w) / width])
        image = tf.image.crop_and_resize(
            tf.cast(image[None], tf.float32), box[None], [0], [image_size, image_size]
        )[0]
        return tf.image.stateless_random_flip_left_right(image, flip_seed)

    ds = tf.data.Dataset.zip(ds, seeds).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(ds, num_images, batch_size):
    """(images/s wall clock, CPU ms per image of this process) over `num_images` images."""
    iterator = iter(ds)
    for _ in range(2):  # warm-up: tracing, thread pools, page cache
        next(iterator)
    steps = max(1, num_images // batch_size)
    cpu, start = os.times(), time.perf_counter()
    for _ in range(steps):
        images = next(iterator)[0]
    images.numpy()
    wall, end_cpu = time.perf_counter() - start, os.times()
    del iterator  # stops its background threads before the next measurement
    cpu_seconds = end_cpu.user + end_cpu.system - cpu.user - cpu.system
    n = steps * batch_size
    return n / wall, 1e3 * cpu_seconds / n


def main(_):
    f = flags.FLAGS
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as root:
        write_photos(root, f.num_files)
        ours = make_dataset(
            "folder",
            "train",
            data_dir=root,
            batch_size=f.batch_size,
            image_size=f.image_size,
            seed=0,
            repeat=True,
        )
        peer = peer_dataset(root, f.batch_size, f.image_size)
        results = {"ours": [], "peer": []}
        for _ in range(f.rounds):
            results["ours"].append(measure(ours, f.num_images, f.batch_size))
            results["peer"].append(measure(peer, f.num_images, f.batch_size))
    rate = {name: max(r for r, _ in runs) for name, runs in results.items()}
    cpu = {name: min(c for _, c in runs) for name, runs in results.items()}
    print(f"{f.num_files} JPEGs, crops {f.image_size}x{f.image_size}, batch {f.batch_size}")
    for name, label in [
        ("ours", "fused decode_and_crop_jpeg (keras_preact folder pipeline)"),
        ("peer", "decode whole image, then random resized crop (keras-cv style)"),
    ]:
        runs = ", ".join(f"{r:.0f}" for r, _ in results[name])
        print(f"{label}: {rate[name]:.0f} images/s (rounds: {runs}); {cpu[name]:.2f} CPU ms/image")
    print(f"ratio ours / peer, images/s (best rounds): {rate['ours'] / rate['peer']:.2f}x")
    print(f"ratio ours / peer, images per CPU second: {cpu['peer'] / cpu['ours']:.2f}x")


if __name__ == "__main__":
    app.run(main)
