"""Is the training pipeline with timm's augmentations faster than timm's own, and than training?

Writes the folder of JPEG photos `input_pipeline.py` writes, then measures in
one run, everything on: random-resized crop to 224 and flip, RandAugment
(2 ops, magnitude 9, std 0.5: timm's "rand-m9-mstd0.5-inc1"), random erasing
(p 0.25, per-pixel noise) and MixUp (alpha 0.8) / CutMix (alpha 1.0), switched
with probability 0.5 per batch:

* ours: `keras_preact.data.make_dataset("folder", "train", augmentation=
  Augmentation(...))`, tf.data on all cores;
* the peer: timm's `create_transform(224, is_training=True, auto_augment=
  "rand-m9-mstd0.5-inc1", re_prob=0.25, re_mode="pixel")` on a torchvision
  `ImageFolder` in a torch `DataLoader` with as many workers as cores, and
  timm's `Mixup` on each batch in this process (as timm's train.py does);
* the ResNet-50 v2 training step (`input_pipeline.training_steps`).

torch, torchvision and timm are a benchmark peer only, never a dependency. If
they are not importable (add their site-packages with `--peer_path`), the
section has our figure and says so. Two workarounds are applied to the peer
and said in the section: a torchvision wheel built for CUDA on a CPU torch
cannot load its C ops and fails to import (`torchvision::nms` missing); its
two fake-kernel registrations get the op schemas defined first (timm's
transforms use none of torchvision's C ops). And recent Pillow (13 here) refuses to
posterize to 0 bits, which timm's PosterizeIncreasing asks for at magnitude
10 (reached by the magnitude noise): that op is given older Pillow's
result, a black image, instead of raising in a worker.

The pipelines alternate for `--rounds` rounds; the best round of each counts.
Prints one Markdown section (benchmarks/README.md) to stdout; progress goes to
stderr. From the repository root:

    python benchmarks/augment_pipeline.py --peer_path=/tmp/venv-timm/lib/python3.11/site-packages
    python benchmarks/augment_pipeline.py --num_images=32 --num_files=8 --batch_size=8 \\
        --image_size=64 --rounds=1 --train_steps=1 --train_batch=2 --train_image_size=32  # smoke
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Its flags (sizes, rounds, the training step) are this script's too; defaults below.
import input_pipeline  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from contract import target_line  # noqa: E402
from input_pipeline import log, measure, train_net, training_steps, write_photos  # noqa: E402

from keras_preact.data import Augmentation, make_dataset  # noqa: E402

flags.DEFINE_list(
    "peer_path", [], "folders put on sys.path to import torch, torchvision and timm (the peer)"
)
flags.DEFINE_integer("workers", 0, "DataLoader workers of the peer (0: one per core)")
FLAGS = flags.FLAGS
FLAGS.set_default("num_images", 512)
FLAGS.set_default("rounds", 3)
FLAGS.set_default("train_steps", 2)
FLAG_NAMES = (*input_pipeline.FLAG_NAMES, "workers")

TARGET_PEER = 1.5
TARGET_TRAINING = 1.0
MIXUP_ALPHA, CUTMIX_ALPHA, ERASE_PROB = 0.8, 1.0, 0.25
RANDAUGMENT = (2, 9, 0.5)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def import_peer(paths):
    """(torch, torchvision, timm) or None when not importable, with the workarounds above."""
    sys.path.extend(p for p in paths if p not in sys.path)
    try:
        import torch
    except ImportError:
        return None
    try:
        import torchvision
    except RuntimeError:  # a CUDA torchvision on CPU torch: its C ops did not load
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        for op in ("nms", "qnms"):
            schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            torch.library.define(f"torchvision::{op}", schema)
        import torchvision
    except ImportError:
        return None
    try:
        import timm
        from timm.data import auto_augment
    except ImportError:
        return None
    auto_augment.NAME_TO_OP["PosterizeIncreasing"] = _posterize
    return torch, torchvision, timm


def _posterize(image, bits_to_keep, **_):
    """timm's `posterize`, with older Pillow's 0 bits (black) where recent Pillow raises."""
    from PIL import ImageOps

    if bits_to_keep >= 8:
        return image
    if bits_to_keep <= 0:
        return image.point(lambda _: 0)
    return ImageOps.posterize(image, bits_to_keep)


def peer_loader(peer, root, batch_size, image_size, workers):
    """timm's training transforms in a DataLoader, endless, and timm's `Mixup` for its batches."""
    torch, torchvision, timm = peer
    from timm.data import Mixup, create_transform

    transform = create_transform(
        image_size,
        is_training=True,
        auto_augment="rand-m9-mstd0.5-inc1",
        re_prob=ERASE_PROB,
        re_mode="pixel",
    )
    dataset = torchvision.datasets.ImageFolder(os.path.join(root, "train"), transform)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=10**9)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=True,
        drop_last=True,
    )
    mixup = Mixup(
        mixup_alpha=MIXUP_ALPHA,
        cutmix_alpha=CUTMIX_ALPHA,
        label_smoothing=0.0,
        num_classes=len(dataset.classes),
    )
    return loader, mixup


def measure_peer(loader, mixup, num_images, batch_size):
    """(images/s, None) over `num_images` images of a new iterator, after 2 warm-up batches."""
    iterator = iter(loader)
    for _ in range(2):
        mixup(*next(iterator))
    steps = max(1, num_images // batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        mixup(*next(iterator))
    return steps * batch_size / (time.perf_counter() - start), None


def ours(root):
    augmentation = Augmentation(
        randaugment=RANDAUGMENT,
        random_erasing=ERASE_PROB,
        mixup_alpha=MIXUP_ALPHA,
        cutmix_alpha=CUTMIX_ALPHA,
        num_classes=4,
        fill_mean=IMAGENET_MEAN,
        fill_std=IMAGENET_STD,
    )
    return make_dataset(
        "folder",
        "train",
        data_dir=root,
        batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size,
        seed=0,
        repeat=True,
        augmentation=augmentation,
    )


def command():
    args = " ".join(f"--{name}={FLAGS[name].value}" for name in FLAG_NAMES)
    # The peer's site-packages are a path of this machine: named, not shown.
    peer = " --peer_path=<site-packages with torch, torchvision, timm>" if FLAGS.peer_path else ""
    return f"python benchmarks/augment_pipeline.py {args}{peer}"


def _describe(peer, workers):
    cores = os.cpu_count()
    f = FLAGS
    train_size = f.train_image_size or f.image_size
    if peer:
        torch, torchvision, timm = peer
        versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}"
        peer_text = (
            f"Peer: timm's `create_transform({f.image_size}, is_training=True, auto_augment="
            '"rand-m9-mstd0.5-inc1", re_prob=0.25, re_mode="pixel")` (random-resized crop with '
            "random bilinear/bicubic, flip, RandAugment, ToTensor, normalise, erasing) on a "
            f"torchvision `ImageFolder` in a torch `DataLoader` with {workers} worker processes "
            "(persistent), then timm's `Mixup(mixup_alpha=0.8, cutmix_alpha=1.0)` on each batch "
            f"in this process; {versions}. Workarounds (see the script's docstring): the "
            "torchvision C ops' fake kernels get their schemas defined when its C ops cannot "
            "load, and PosterizeIncreasing to 0 bits gives a black image (older Pillow) where "
            "recent Pillow raises. "
        )
    else:
        peer_text = (
            "Peer: not measured, torch/torchvision/timm are not installed here (pass their "
            "site-packages with `--peer_path`); the peer target is left out. "
        )
    return (
        f"Images/s of the training input pipeline with timm's augmentations on {f.num_files} "
        "JPEG photos (quality 90, 500x375 to 333x500, from the page cache; "
        "`input_pipeline.py`'s folder): random-resized crop to "
        f"{f.image_size}x{f.image_size} and flip, RandAugment (2 ops, magnitude 9, std 0.5, "
        "timm's increasing op set), random erasing (p 0.25, per-pixel N(0, 1) in normalised "
        "units), then MixUp (alpha 0.8) or CutMix (alpha 1.0), one per batch, in batches of "
        f'{f.batch_size}. Ours: `make_dataset("folder", "train", seed=0, repeat=True, '
        "augmentation=Augmentation(randaugment=(2, 9, 0.5), random_erasing=0.25, "
        "mixup_alpha=0.8, cutmix_alpha=1.0, ...))` (tf.data, all cores). "
        f"{peer_text}The pipelines alternate for {f.rounds} round(s) of {f.num_images} images "
        "(each a new iterator after 2 warm-up batches); the best round counts. Targets: ours / "
        f"timm >= {TARGET_PEER}x (issue 20: the tf.data pipeline should beat the PyTorch "
        f"workers on the same cores), and ours / the {train_net()} training step "
        f"(`input_pipeline.training_steps`: batch {f.train_batch} of {train_size}x{train_size}, "
        f"best of {f.train_steps} steps) >= {TARGET_TRAINING:.0f}x, so training on these "
        f"{cores} cores never waits on the augmented data. TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, {cores} CPU cores. Command: `{command()}`."
    )


def section(results, train, peer, workers):
    rate = {name: max(r for r, _ in runs) for name, runs in results.items()}
    train_rate = max(r for r, _ in train)
    lines = [
        "## Augmented input pipeline",
        "",
        _describe(peer, workers),
        "",
        "| Measured | Images/s (best) | Images/s per round or step |",
        "|---|---:|---|",
    ]
    labels = {"ours": "ours (`make_dataset`, `Augmentation`)", "peer": "timm (DataLoader + Mixup)"}
    for name, runs in results.items():
        rounds = ", ".join(f"{r:.0f}" for r, _ in runs)
        lines.append(f"| {labels[name]} | {rate[name]:.0f} | {rounds} |")
    train_size = FLAGS.train_image_size or FLAGS.image_size
    steps = ", ".join(f"{r:.2f}" for r, _ in train)
    lines.append(
        f"| {train_net()} training step (batch {FLAGS.train_batch}, {train_size}x{train_size}) "
        f"| {train_rate:.2f} | {steps} |"
    )
    feed = rate["ours"] / train_rate
    targets = []
    if "peer" in rate:
        ratio = rate["ours"] / rate["peer"]
        lines.append(f"| ours / timm | {ratio:.2f}x | |")
        targets.append(
            target_line(
                "augmented pipeline, ours / timm, images/s",
                f"{ratio:.2f}x",
                f">= {TARGET_PEER}x",
                ratio >= TARGET_PEER,
            )
        )
    lines.append(f"| ours / training step | {feed:.1f}x | |")
    targets.append(
        target_line(
            f"augmented pipeline / {train_net()} training step, images/s",
            f"{feed:.1f}x",
            f">= {TARGET_TRAINING:.0f}x",
            feed >= TARGET_TRAINING,
        )
    )
    return "\n".join([*lines, "", *targets])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    f = FLAGS
    peer = import_peer(f.peer_path)
    workers = f.workers or os.cpu_count()
    log(f"peer: {'timm ' + peer[2].__version__ if peer else 'not installed'}")
    with tempfile.TemporaryDirectory() as root:
        write_photos(root, f.num_files)
        runs = {"ours": lambda: measure(ours_ds, f.num_images, f.batch_size)}
        ours_ds = ours(root)
        if peer:
            loader, mixup = peer_loader(peer, root, f.batch_size, f.image_size, workers)
            runs["peer"] = lambda: measure_peer(loader, mixup, f.num_images, f.batch_size)
        results = {name: [] for name in runs}
        for r in range(f.rounds):
            for name in list(runs) if r % 2 == 0 else reversed(list(runs)):
                results[name].append(runs[name]())
            rates = ", ".join(f"{name} {v[-1][0]:.0f}" for name, v in results.items())
            log(f"round {r + 1}/{f.rounds}, images/s: {rates}")
        if peer:
            del loader  # stops its workers
    train = training_steps(f.train_batch, f.train_image_size or f.image_size, f.train_steps)
    print(section(results, train, peer, workers))


if __name__ == "__main__":
    app.run(main)
