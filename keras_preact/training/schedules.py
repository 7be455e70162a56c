"""The learning-rate schedules, in optimizer steps, scaled to the global batch size.

All are stock Keras schedules (`PiecewiseConstantDecay`, `CosineDecay`), so
they serialize with the optimizer and are indexed by `optimizer.iterations`
(the number of updates already applied): a run resumed at step `s` gets the
same learning rate as an uninterrupted one.

* CIFAR (the paper's appendix): batch 128, lr 0.1 divided by 10 at 32k and 48k
  iterations, stop at 64k, warm-up at lr 0.01 for the first 400 iterations.
  At another global batch size `B` the run covers the same number of examples
  (64k x 128 / B steps) with the learning rate scaled linearly (x B / 128).
  A run shortened or lengthened with `total_steps` keeps the same shape: decay
  at 50% and 75% of the run, warm-up for the first 0.625% (400 / 64k).
* ImageNet: lr 0.1 x B / 256 (no warm-up), divided by 10 every 30 epochs
  (at epochs 30, 60 and 90 of a 90-epoch run by default, as fb.resnet.torch).
* Fine-tuning (not the paper's: for starting from pretrained weights):
  lr 0.01 x B / 256, reached by a linear warm-up from 0 over the first 5% of
  the run (at least one step), then a cosine decay to 0 at the run's end.
* Cosine (timm's, "ResNet strikes back"): the same shape with any peak and
  warm-up length (`cosine_schedule`).
* BiT-HyperRule (Kolesnikov et al. 2020, `bit_hyperrule.py`): lr 0.003 x B /
  512, a linear warm-up from 0, then divided by 10 at three steps; the run's
  length and steps by the training set's size (`bit_supports`).

`scaled_learning_rate` scales a peak rate given at a reference batch to the
run's: linearly for SGD (Goyal et al.), by the square root for the adaptive
optimizers (timm's `lr_base_scale` default for Adam and LAMB).
"""

from __future__ import annotations

import keras

CIFAR_REFERENCE_BATCH = 128
CIFAR_STEPS = 64_000
CIFAR_DECAY_STEPS = (32_000, 48_000)
CIFAR_WARMUP_STEPS = 400

IMAGENET_REFERENCE_BATCH = 256
IMAGENET_EPOCHS = 90
IMAGENET_DECAY_EPOCHS = (30, 60, 90)

FINETUNE_REFERENCE_BATCH = 256
FINETUNE_LEARNING_RATE = 0.01
FINETUNE_WARMUP_FRACTION = 0.05

SCHEDULES = ("cifar", "imagenet", "finetune", "cosine", "bit")

# BiT-HyperRule: (warm-up end, three decays, run end) in steps, by training-set size.
BIT_SUPPORTS = (
    (20_000, (100, 200, 300, 400, 500)),
    (500_000, (500, 3000, 6000, 9000, 10_000)),
    (None, (500, 6000, 12_000, 18_000, 20_000)),
)
BIT_REFERENCE_BATCH = 512
BIT_LEARNING_RATE = 0.003


def step_schedule(learning_rate, decay_steps, *, warmup_steps=0, warmup_learning_rate=None):
    """Constant `learning_rate`, divided by 10 at each of `decay_steps`, after a warm-up.

    Step `s` (0-based: `optimizer.iterations` before the update) uses
    `warmup_learning_rate` while `s < warmup_steps`, then `learning_rate`
    divided by 10 once for every decay step `d <= s`.

    >>> schedule = step_schedule(0.1, [32000, 48000], warmup_steps=400,
    ...                          warmup_learning_rate=0.01)
    >>> [round(float(schedule(s)), 6) for s in (399, 400, 31999, 32000, 48000)]
    [0.01, 0.1, 0.1, 0.01, 0.001]
    """
    decay_steps = [int(d) for d in decay_steps]
    if any(d < 1 for d in decay_steps) or decay_steps != sorted(set(decay_steps)):
        raise ValueError(f"decay_steps must be increasing positive integers, got {decay_steps}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    boundaries, values = [], []
    if warmup_steps:
        boundaries.append(int(warmup_steps) - 1)
        values.append(
            float(warmup_learning_rate if warmup_learning_rate is not None else learning_rate / 10)
        )
    values.append(float(learning_rate))
    for index, step in enumerate(decay_steps):
        if boundaries and step - 1 <= boundaries[-1]:
            raise ValueError(
                f"decay step {step} falls inside the {warmup_steps}-step warm-up; "
                "shorten the warm-up or train longer."
            )
        boundaries.append(step - 1)
        values.append(float(learning_rate) * 0.1 ** (index + 1))
    if not boundaries:  # no warm-up, no decay: a constant
        return keras.optimizers.schedules.PiecewiseConstantDecay([0], values * 2)
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def cifar_total_steps(global_batch_size):
    """The paper's CIFAR run length (64k iterations at batch 128) at another batch size.

    >>> cifar_total_steps(128), cifar_total_steps(64)
    (64000, 128000)
    """
    return max(1, round(CIFAR_STEPS * CIFAR_REFERENCE_BATCH / global_batch_size))


def cifar_schedule(global_batch_size, total_steps=None, base_learning_rate=0.1):
    """The paper's CIFAR schedule for `total_steps` (default: the paper's run length).

    Returns a `PiecewiseConstantDecay` with lr `base_learning_rate x B / 128`,
    a warm-up at a tenth of it for the first 0.625% of the run and decays
    (divide by 10) at 50% and 75% of the run.

    >>> schedule = cifar_schedule(128)
    >>> [round(float(schedule(s)), 6) for s in (0, 400, 32000, 48000)]
    [0.01, 0.1, 0.01, 0.001]
    """
    _check_batch(global_batch_size)
    if total_steps is None:
        total_steps = cifar_total_steps(global_batch_size)
    lr = base_learning_rate * global_batch_size / CIFAR_REFERENCE_BATCH
    fraction = total_steps / CIFAR_STEPS
    decay = sorted({max(1, round(d * fraction)) for d in CIFAR_DECAY_STEPS})
    warmup = round(CIFAR_WARMUP_STEPS * fraction)
    warmup = min(warmup, decay[0] - 1)
    return step_schedule(lr, decay, warmup_steps=warmup, warmup_learning_rate=lr / 10)


def imagenet_schedule(global_batch_size, steps_per_epoch, base_learning_rate=0.1):
    """The paper's ImageNet schedule: lr `base_learning_rate x B / 256`, / 10 at epochs 30, 60, 90.

    >>> schedule = imagenet_schedule(256, steps_per_epoch=5004)
    >>> [round(float(schedule(s)), 6) for s in (0, 5004 * 30 - 1, 5004 * 30)]
    [0.1, 0.1, 0.01]
    """
    _check_batch(global_batch_size)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
    lr = base_learning_rate * global_batch_size / IMAGENET_REFERENCE_BATCH
    return step_schedule(lr, [e * steps_per_epoch for e in IMAGENET_DECAY_EPOCHS])


def finetune_schedule(global_batch_size, total_steps, base_learning_rate=FINETUNE_LEARNING_RATE):
    """Fine-tuning: linear warm-up to `base_learning_rate x B / 256`, then cosine decay to 0.

    The warm-up goes from 0 (step 0) to the peak at step `w`, the first 5% of
    `total_steps` (at least 1); the cosine then reaches 0 at step `total_steps`
    (a stock `CosineDecay` with `warmup_target`).

    >>> schedule = finetune_schedule(256, total_steps=1000)
    >>> [round(float(schedule(s)), 6) for s in (0, 25, 50, 525, 1000)]
    [0.0, 0.005, 0.01, 0.005, 0.0]
    """
    _check_batch(global_batch_size)
    lr = base_learning_rate * global_batch_size / FINETUNE_REFERENCE_BATCH
    return cosine_schedule(lr, total_steps, round(FINETUNE_WARMUP_FRACTION * total_steps))


def scaled_learning_rate(learning_rate, global_batch_size, reference_batch, scaling="linear"):
    """`learning_rate`, given at `reference_batch`, at `global_batch_size` ("linear" or "sqrt").

    >>> scaled_learning_rate(0.1, 512, 256), scaled_learning_rate(8e-3, 512, 2048, "sqrt")
    (0.2, 0.004)
    """
    _check_batch(global_batch_size)
    ratio = global_batch_size / reference_batch
    return float(learning_rate) * (ratio if scaling == "linear" else ratio**0.5)


def cosine_schedule(peak_learning_rate, total_steps, warmup_steps):
    """A linear warm-up from 0 to `peak_learning_rate` over `warmup_steps`, then cosine to 0.

    The cosine reaches 0 at step `total_steps` (a stock `CosineDecay` with
    `warmup_target`); at least one warm-up step and one decay step.

    >>> schedule = cosine_schedule(0.008, total_steps=100, warmup_steps=5)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 100)]
    [0.0, 0.008, 0.0]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    warmup = min(max(1, int(warmup_steps)), max(1, total_steps - 1))
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, total_steps - warmup),
        warmup_target=float(peak_learning_rate),
        warmup_steps=warmup,
    )


def bit_supports(num_examples, total_steps=None):
    """BiT-HyperRule's (warm-up end, decay, decay, decay, end) steps for a training set.

    `total_steps` (a run length of one's own) stretches them proportionally.

    >>> bit_supports(5_000), bit_supports(50_000), bit_supports(50_000, total_steps=1000)
    ((100, 200, 300, 400, 500), (500, 3000, 6000, 9000, 10000), (50, 300, 600, 900, 1000))
    """
    supports = next(s for limit, s in BIT_SUPPORTS if limit is None or num_examples < limit)
    if total_steps is None:
        return supports
    return tuple(max(1, round(s * total_steps / supports[-1])) for s in supports)


@keras.saving.register_keras_serializable(package="keras_preact")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up from 0 to `learning_rate` over `warmup_steps`, then / 10 after each
    of `decay_steps` (BiT's `get_lr`: step `s` is divided once for every decay step `< s`).

    >>> schedule = WarmupStepDecay(0.003, warmup_steps=100, decay_steps=(200, 300, 400))
    >>> [round(float(schedule(s)), 7) for s in (0, 50, 100, 200, 201, 401)]
    [0.0, 0.0015, 0.003, 0.003, 0.0003, 3e-06]
    """

    def __init__(self, learning_rate, warmup_steps, decay_steps):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = tuple(int(d) for d in decay_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        decays = sum(keras.ops.cast(step > d, "float32") for d in self.decay_steps)
        decayed = self.learning_rate * keras.ops.power(0.1, decays)
        warm = self.learning_rate * step / max(1, self.warmup_steps)
        return keras.ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": list(self.decay_steps),
        }


def bit_schedule(peak_learning_rate, supports):
    """BiT-HyperRule's schedule over `supports` (`bit_supports`), peaking at `peak_learning_rate`."""
    return WarmupStepDecay(peak_learning_rate, supports[0], supports[1:-1])


def _check_batch(global_batch_size):
    if not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ValueError(
            f"global batch size must be a positive integer, got {global_batch_size!r}."
        )
