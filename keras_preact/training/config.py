"""`TrainConfig`: everything a training run needs, checked before any work starts."""

from __future__ import annotations

import dataclasses
import json

from keras_preact.layers import SHORTCUTS, UNIT_VARIANTS
from keras_preact.training.schedules import SCHEDULES
from keras_preact.training.strategy import STRATEGIES

FAMILIES = ("cifar", "imagenet")
CIFAR_UNITS = ("basic", "bottleneck", "one_layer")

# Fields that must match to resume from a model_dir's checkpoint.
RESUME_FIELDS = (
    "family",
    "dataset",
    "depth",
    "unit",
    "width",
    "layout",
    "unit_variant",
    "shortcut",
    "shortcut_scale",
    "residual_scale",
    "gate_bias_init",
    "shortcut_dropout_rate",
    "image_size",
    "batch_size",
    "mixed_precision",
)


class ConfigError(ValueError):
    """The run cannot start: a flag, the data or the model_dir is wrong (the message says how)."""


@dataclasses.dataclass
class TrainConfig:
    """A training run: data, model, schedule, distribution and output.

    `recipes/cifar.py` and `recipes/imagenet.py` fill one from flags and call
    `keras_preact.training.run(config)`; the flags' help texts describe the
    fields. `None` means "the paper's default" (or the dataset's, for sizes).

    `weights` starts the network from pretrained weights (what the builders
    take as `weights=`: `"imagenet"`, a source name, a checkpoint file); a
    resumed run restores its checkpoint instead. `layout=None` follows the
    weights (else `"paper"`). `eval_only=True` evaluates `weights` on the
    eval split without training.

    Example:

    >>> config = TrainConfig(dataset="digits", model_dir="demo_run", depth=20, epochs=15)
    >>> config.validate()
    """

    dataset: str = "cifar10"
    model_dir: str = ""
    data_dir: str | None = None
    download: bool = False
    # Model.
    family: str = "cifar"
    depth: int = 110
    unit: str | None = None
    width: int = 16
    layout: str | None = None
    weights: str | None = None
    unit_variant: str = "full_preact"
    shortcut: str = "identity"
    shortcut_scale: float | None = None
    residual_scale: float | None = None
    gate_bias_init: float | None = None
    shortcut_dropout_rate: float | None = None
    sync_batchnorm: bool = False
    # Data.
    image_size: int | None = None
    eval_crop_sizes: tuple = ()
    color_augment: bool = False
    # Schedule (the paper's by default; see keras_preact.training.schedules).
    schedule: str = "cifar"  # "cifar", "imagenet" or "finetune"
    batch_size: int = 128
    epochs: float | None = None
    train_steps: int | None = None
    steps_per_epoch: int | None = None
    base_learning_rate: float | None = None  # None: the schedule's (0.1; finetune 0.01)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Distribution and speed.
    strategy: str = "default"
    tpu: str | None = None
    mixed_precision: bool = False
    jit_compile: bool = False
    steps_per_loop: int = 1
    seed: int | None = None
    # Output.
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1
    export: bool = False
    eval_only: bool = False
    verbose: int = 1

    def validate(self):
        """Raises ValueError naming the first bad field and what it accepts."""
        from keras_preact.data import DATASETS

        _choice("dataset", self.dataset, DATASETS)
        _choice("family", self.family, FAMILIES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("unit_variant", self.unit_variant, UNIT_VARIANTS)
        _choice("shortcut", self.shortcut, SHORTCUTS)
        if not self.model_dir:
            raise ValueError("model_dir is required: where checkpoints, logs and the model go.")
        if self.family == "cifar":
            from keras_preact.models.cifar import CIFAR_DEPTHS, cifar_units_per_stage

            if self.unit is not None:
                _choice("unit", self.unit, CIFAR_UNITS)
            cifar_units_per_stage(self.depth, self.unit or CIFAR_DEPTHS.get(self.depth, "basic"))
            if self.width < 1:
                raise ValueError(f"width must be >= 1, got {self.width}.")
        else:
            from keras_preact.models.imagenet import IMAGENET_DEPTHS, LAYOUTS

            _choice("depth", self.depth, tuple(IMAGENET_DEPTHS))
            if self.layout is not None:
                _choice("layout", self.layout, tuple(LAYOUTS))
            if self.unit is not None:
                raise ValueError("unit is fixed by the depth for ImageNet nets; leave it unset.")
        for name in ("batch_size", "checkpoint_every", "keep_checkpoints", "steps_per_loop"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.epochs is not None and self.train_steps is not None:
            raise ValueError("Give epochs or train_steps, not both.")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}.")
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {self.train_steps}.")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}.")
        if self.eval_every < 0:
            raise ValueError(
                f"eval_every must be >= 0 (0: only at the end), got {self.eval_every}."
            )
        if self.eval_only and self.weights is None:
            raise ValueError("eval_only needs weights: the model to evaluate.")
        if self.schedule == "finetune" and not self.eval_only:
            if self.epochs is None and self.train_steps is None:
                raise ValueError(
                    "The finetune schedule has no default length: give epochs or train_steps."
                )
        lr = 0.1 if self.base_learning_rate is None else self.base_learning_rate
        if lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError("Need base_learning_rate > 0, 0 <= momentum < 1, weight_decay >= 0.")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}.")
        if any(size < 32 for size in self.eval_crop_sizes):
            raise ValueError(f"eval_crop_sizes must be >= 32, got {self.eval_crop_sizes}.")
        if self.jit_compile and self.sync_batchnorm:
            raise ValueError("sync_batchnorm all-reduces inside the step; it cannot jit_compile.")

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    def resume_mismatches(self, saved):
        """Fields of a saved config (a dict) that differ from this one and forbid resuming."""
        return {
            key: (saved.get(key), getattr(self, key))
            for key in RESUME_FIELDS
            if key in saved and saved[key] != getattr(self, key)
        }


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"Unknown {name} {value!r}. Allowed values: {', '.join(map(repr, allowed))}."
        )
