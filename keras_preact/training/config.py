"""`TrainConfig`: everything a training run needs, checked before any work starts.

Each field's `dataclasses.field` metadata says how the recipes' command lines
set it (`Flag`, declared with `option(...)`): `keras_preact.training.flags`
defines one absl flag per field from it, so a new option is one field here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from keras_preact.data import DATASETS
from keras_preact.data.crops import TTA_MODES
from keras_preact.layers import SHORTCUTS, UNIT_VARIANTS
from keras_preact.models.cifar import CIFAR_DEPTHS, cifar_units_per_stage
from keras_preact.models.imagenet import IMAGENET_DEPTHS, LAYOUTS
from keras_preact.options import check_choice
from keras_preact.training.loop import LOSSES, MAX_ROLLBACKS, NONFINITE_ACTIONS
from keras_preact.training.optimizer import OPTIMIZERS
from keras_preact.training.recipes import RECIPE_NAMES
from keras_preact.training.schedules import (
    CIFAR_REFERENCE_BATCH,
    FINETUNE_LEARNING_RATE,
    FINETUNE_REFERENCE_BATCH,
    IMAGENET_REFERENCE_BATCH,
    SCHEDULES,
)
from keras_preact.training.strategy import STRATEGIES

FAMILIES = ("cifar", "imagenet")
CIFAR_UNITS = ("basic", "bottleneck", "one_layer")
# The sections of the recipes' --help, in order.
GROUPS = MODEL, DATA, AUGMENT, SCHEDULE, LOSS, DISTRIBUTION, OUTPUT, EXPORT = (
    "model",
    "data",
    "augmentation",
    "schedule/optimizer",
    "loss/regularization",
    "distribution",
    "checkpoints/output",
    "export",
)

# Fields that must match to resume from a model_dir's checkpoint.
RESUME_FIELDS = (
    "freeze",
    "optimizer",
    "ema_decay",
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
class Flag:
    """How the recipes' command lines set a `TrainConfig` field (the field's metadata["flag"]).

    The flag's type follows the field's: bool, int, float, str (an enum with
    `choices`) or, for a tuple of ints, a comma-separated list.

    Attributes:
        group: the --help section, one of `GROUPS`.
        help: the flag's help, or `{family: help}` where the recipes differ.
        families: the recipes ("cifar", "imagenet") that have the flag.
        choices: an enum's values, `{family: values}`, or a function returning
            them (called when the flags are defined, so its imports wait).
        defaults: `{family: default}` where a recipe's differs from the field's.
        name: the flag's name, where it is not the field's.
        required: the flag has no default and must be given.
    """

    group: str
    help: str | dict
    families: tuple = FAMILIES
    choices: tuple | dict | Callable | None = None
    defaults: dict = dataclasses.field(default_factory=dict)
    name: str | None = None
    required: bool = False


def option(
    default, group, help, *, families=FAMILIES, choices=None, name=None, required=False, **defaults
):
    """A `TrainConfig` field that is a recipe flag; `imagenet=224` sets that recipe's default.

    >>> option(110, MODEL, "Network depth.", imagenet=200).metadata["flag"].defaults
    {'imagenet': 200}
    """
    spec = Flag(group, help, tuple(families), choices, defaults, name, required)
    return dataclasses.field(default=default, metadata={"flag": spec})


# The metadata of a field the program sets, not a flag.
INTERNAL = {"flag": None}


_WEIGHTS_HELP = {
    "cifar": "Start from these weights: a .weights.h5 / .keras file of a CIFAR net built with the "
    "same flags (e.g. an earlier run's model.weights.h5). A resumed run restores its "
    "checkpoint instead.",
    "imagenet": "Start from these weights: 'imagenet' (the depth's default public checkpoint), a "
    "source name (keras_preact.weights.sources(): timm:resnetv2_50.a1h_in1k, "
    "keras:resnet50v2, fb:resnet-200, ...) or a checkpoint file (timm .safetensors, "
    "keras.applications .h5, fb.resnet.torch .t7, Keras .weights.h5/.keras). The "
    "classifier is loaded only if it has the dataset's number of classes; evaluation "
    "uses the source's resize interpolation and crop fraction. A resumed run restores "
    "its checkpoint instead.",
}
_EVAL_ONLY_HELP = {
    family: "Only evaluate --weights on the eval split"
    + (" at every --eval_crop_sizes" if family == "imagenet" else "")
    + " (with the weights' own eval preprocessing) and write metrics.json to --model_dir; "
    "no training."
    for family in FAMILIES
}
_SCHEDULE_HELP = {
    family: f"Learning-rate schedule: {family} (the paper's) or finetune (for --weights: linear "
    "warm-up from 0 over the first 5% of the steps, then cosine decay to 0 at the last; "
    "needs --epochs or --train_steps)."
    for family in FAMILIES
}
_LEARNING_RATE_HELP = {
    family: f"Peak learning rate at batch --lr_reference_batch (default {reference}): 0.1 "
    f"by default, {FINETUNE_LEARNING_RATE} with --schedule=finetune{finetune_batch}, 0.001 with "
    "adamw or lamb at batch 256; scaled to --batch_size linearly for sgd, by the square root "
    "for adamw and lamb."
    for family, reference, finetune_batch in (
        ("cifar", CIFAR_REFERENCE_BATCH, f", at batch {FINETUNE_REFERENCE_BATCH}"),
        ("imagenet", IMAGENET_REFERENCE_BATCH, ""),
    )
}


@dataclasses.dataclass
class TrainConfig:
    """A training run: model, data, schedule, distribution and output.

    `recipes/cifar.py` and `recipes/imagenet.py` (`keras_preact.training.cli`)
    fill one from flags and call `keras_preact.training.run(config)`; each
    field's help is its flag's (`option`). `None` means "the paper's default"
    (or the dataset's, for sizes). A field's default is the CIFAR recipe's.

    `weights` starts the network from pretrained weights (what the builders
    take as `weights=`: `"imagenet"`, a source name, a checkpoint file); a
    resumed run restores its checkpoint instead. `layout=None` follows the
    weights (else `"paper"`). `eval_only=True` evaluates `weights` on the
    eval split without training. `export_dir` is read by the command line
    after `run`, not by `run`.

    Example:

    >>> config = TrainConfig(dataset="digits", model_dir="demo_run", depth=20, epochs=15)
    >>> config.validate()
    """

    family: str = dataclasses.field(default="cifar", metadata=INTERNAL)  # the recipe's
    # Model.
    depth: int = option(
        110,
        MODEL,
        "Network depth (CIFAR: 6n+2 basic, 9n+2 bottleneck, 3n+2 one_layer; ImageNet: 18..200).",
        imagenet=200,
    )
    unit: str | None = option(
        None,
        MODEL,
        "Unit type (default: bottleneck for 164 and 1001, else basic).",
        families=["cifar"],
        choices=CIFAR_UNITS,
    )
    width: int = option(
        16, MODEL, "Channels of the first stage (16 in the paper).", families=["cifar"]
    )
    layout: str | None = option(
        None,
        MODEL,
        "Network layout: paper (the paper's appendix), timm, keras or fb "
        "(keras_preact.models.imagenet). Default: the one --weights need, else paper.",
        families=["imagenet"],
        choices=tuple(LAYOUTS),
    )
    weights: str | None = option(None, MODEL, _WEIGHTS_HELP)
    eval_only: bool = option(False, MODEL, _EVAL_ONLY_HELP)
    freeze: str = option(
        "none",
        MODEL,
        "What does not train: 'backbone' (only the classifier trains; frozen BNs run in "
        "inference mode, so nothing in the backbone changes, its BN statistics included; needs "
        "weights) or 'bn' (every BatchNormalization, statistics included).",
        choices=("none", "backbone", "bn"),
    )
    linear_probe_epochs: float = option(
        0.0,
        MODEL,
        "Two-phase fine-tuning: train only the classifier for this many epochs first (the "
        "backbone frozen as --freeze=backbone freezes it), then the whole network; needs weights.",
    )
    unit_variant: str = option(
        "full_preact",
        MODEL,
        "Where BN/ReLU sit (the paper's Fig. 4 / Table 2).",
        choices=UNIT_VARIANTS,
    )
    shortcut: str = option(
        "identity", MODEL, "Shortcut type (the paper's Fig. 2 / Table 1).", choices=SHORTCUTS
    )
    shortcut_scale: float | None = option(
        None, MODEL, "constant_scaling: scale of the shortcut (0.5)."
    )
    residual_scale: float | None = option(
        None, MODEL, "constant_scaling: scale of F (1.0; 0.5 for 'frozen gating')."
    )
    gate_bias_init: float | None = option(
        None, MODEL, "exclusive/shortcut_only gating: initial gate bias b_g (0)."
    )
    shortcut_dropout_rate: float | None = option(None, MODEL, "dropout shortcut: drop rate (0.5).")
    drop_path_rate: float = option(
        0.0,
        MODEL,
        "Stochastic depth: the last unit's residual-branch drop rate, increasing linearly from "
        "0 over the units (timm's drop_path_rate).",
    )
    # Data.
    dataset: str = option(
        "cifar10",
        DATA,
        "Dataset (keras_preact.data).",
        choices=tuple(DATASETS),
        imagenet="imagenet2012",
    )
    data_dir: str | None = option(
        None, DATA, "Where the dataset lives (tfds data_dir, image folder, TFRecords)."
    )
    download: bool = option(False, DATA, "Let tensorflow-datasets download / prepare the data.")
    image_size: int | None = option(
        None,
        DATA,
        {"cifar": "Image size (default: the dataset's, 32).", "imagenet": "Training crop size."},
        imagenet=224,
    )
    eval_crop_sizes: tuple[int, ...] = option(
        (),
        DATA,
        "Centre-crop sizes of the final evaluation (the paper: 224 and 320).",
        families=["imagenet"],
        imagenet=(224, 320),
    )
    color_augment: bool = option(
        False, DATA, "fb.resnet.torch colour jitter and lighting noise.", families=["imagenet"]
    )
    tta: str = option(
        "none",
        DATA,
        "Test-time augmentation of --eval_only and the final evaluation: none, flip (the crop "
        "and its mirror) or ten_crop (fb.resnet.torch's 10 crops; photo datasets); the "
        "softmax outputs are averaged over the views.",
        choices=TTA_MODES,
    )
    # Augmentation (keras_preact.data.augmentations; timm's semantics).
    randaugment: bool = option(
        False,
        AUGMENT,
        "RandAugment as timm's rand-m9-mstd0.5-inc1: per image, --randaugment_ops random ops "
        "at magnitude --randaugment_magnitude (of 10) with std --randaugment_std.",
    )
    randaugment_ops: int = option(2, AUGMENT, "RandAugment: ops per image (timm's n).")
    randaugment_magnitude: float = option(9.0, AUGMENT, "RandAugment: magnitude, 0..10 (m).")
    randaugment_std: float = option(0.5, AUGMENT, "RandAugment: magnitude noise std (mstd).")
    random_erasing: float = option(
        0.0,
        AUGMENT,
        "Random erasing probability per image (timm's re_prob, 'pixel' mode: a rectangle of "
        "noise with the model's normalisation statistics).",
    )
    mixup_alpha: float = option(
        0.0,
        AUGMENT,
        "MixUp: each batch blends with its reverse by lambda ~ Beta(alpha, alpha); the labels "
        "likewise (0: off).",
    )
    cutmix_alpha: float = option(
        0.0,
        AUGMENT,
        "CutMix: each batch pastes a box of its reverse, lambda ~ Beta(alpha, alpha), labels "
        "by area (0: off). With --mixup_alpha too, one or the other per batch (timm).",
    )
    # Schedule (the paper's by default; see keras_preact.training.schedules).
    recipe: str = option(
        "paper",
        SCHEDULE,
        "A named preset of the flags (keras_preact.training.recipes): paper (the paper's "
        "training, as without it), rsb_a3 (ResNet strikes back A3: LAMB, BCE, mixup/cutmix, "
        "RandAugment, cosine, 100 epochs, train 160 / test 224) or bit (BiT-HyperRule "
        "fine-tuning: SGD lr 0.003 at batch 512, no weight decay, steps, resolution and "
        "mixup by dataset size). Flags given explicitly win; metrics.json records the values.",
        choices=RECIPE_NAMES,
    )
    schedule: str = option(
        "cifar",
        SCHEDULE,
        _SCHEDULE_HELP,
        choices={family: (family, "finetune", "cosine", "bit") for family in FAMILIES},
        imagenet="imagenet",
    )
    batch_size: int = option(
        128, SCHEDULE, "GLOBAL batch size (split over the replicas).", imagenet=256
    )
    epochs: float | None = option(
        None, SCHEDULE, "Training length in epochs (default: the paper's)."
    )
    train_steps: int | None = option(
        None, SCHEDULE, "Training length in steps (instead of --epochs)."
    )
    steps_per_epoch: int | None = option(
        None, SCHEDULE, "Steps per epoch (default: training examples // batch_size)."
    )
    learning_rate: float | None = option(None, SCHEDULE, _LEARNING_RATE_HELP)
    lr_reference_batch: int | None = option(
        None,
        SCHEDULE,
        "The batch size --learning_rate is given at (default: the schedule's, see "
        "--learning_rate; a recipe's own).",
    )
    warmup_epochs: float | None = option(
        None,
        SCHEDULE,
        "cosine schedule: linear warm-up from 0 over this many epochs (default: 5% of the run).",
    )
    optimizer: str = option(
        "sgd",
        SCHEDULE,
        "sgd (momentum, coupled L2 on every parameter: the paper's), adamw or lamb (decoupled "
        "weight decay on kernels only, not norms or biases, as timm; lamb as timm's, with "
        "global gradient-norm clipping at 1). The learning rate scales linearly with the batch "
        "for sgd, by its square root for adamw and lamb.",
        choices=OPTIMIZERS,
    )
    momentum: float = option(0.9, SCHEDULE, "SGD momentum.")
    weight_decay: float = option(
        1e-4,
        SCHEDULE,
        "Weight decay: coupled L2 added to every gradient with sgd; decoupled, kernels only, "
        "with adamw and lamb.",
    )
    layer_decay: float | None = option(
        None,
        SCHEDULE,
        "Layer-wise learning-rate decay (BEiT's, timm's --layer-decay): the classifier trains at "
        "the rate, the last unit at this times it, each earlier unit (then the stem) one more "
        "factor lower; e.g. 0.7.",
    )
    gradient_accumulation_steps: int = option(
        1,
        SCHEDULE,
        "Split each --batch_size batch into this many micro-batches, one after the other, and "
        "apply their summed gradients once: the same update as the whole batch (BatchNorm "
        "statistics aside) in 1/k of the activation memory.",
    )
    # Loss and regularisation.
    loss: str = option(
        "cross_entropy",
        LOSS,
        "cross_entropy (softmax) or bce (binary cross-entropy per class, as ResNet strikes "
        "back trains with mixup/cutmix).",
        choices=LOSSES,
    )
    label_smoothing: float = option(
        0.0, LOSS, "Label smoothing: targets (1 - s) * y + s / classes."
    )
    ema_decay: float = option(
        0.0,
        LOSS,
        "Keep an exponential moving average of the weights (BN statistics too, as timm's "
        "ModelEma): ema = d * ema + (1 - d) * w after every step (0: off). Evaluation reports "
        "both; the saved and exported model is the average.",
    )
    # Distribution and speed.
    strategy: str = option("default", DISTRIBUTION, "tf.distribute strategy.", choices=STRATEGIES)
    tpu: str | None = option(None, DISTRIBUTION, "TPU name or grpc:// address (--strategy=tpu).")
    sync_batchnorm: bool = option(
        False,
        DISTRIBUTION,
        "Batch statistics over all replicas (default: per replica, as the paper).",
    )
    mixed_precision: bool = option(
        False,
        DISTRIBUTION,
        "mixed_float16 with loss scaling on GPUs; mixed_bfloat16 on TPUs and CPUs.",
    )
    jit_compile: bool = option(False, DISTRIBUTION, "Compile the forward/backward pass with XLA.")
    remat: bool = option(
        False,
        DISTRIBUTION,
        "Recompute each residual unit's activations in the backward pass instead of keeping "
        "them: about a third of the memory of a deep net's training step for about a third "
        "more time (e.g. ResNet-1001 at the paper's batch of 128 on one device).",
    )
    steps_per_loop: int = option(
        1, DISTRIBUTION, "Steps per tf.function call (more: fewer host round trips)."
    )
    seed: int | None = option(
        None, DISTRIBUTION, "Random seed (weights init, shuffling, augmentation)."
    )
    # Checkpoints and output.
    model_dir: str = option(
        "",
        OUTPUT,
        "Output: checkpoints, logs, metrics.json, model files.",
        required=True,
    )
    checkpoint_every: int = option(1000, OUTPUT, "Steps between checkpoints.")
    keep_checkpoints: int = option(3, OUTPUT, "Checkpoints kept.")
    eval_every: int = option(1, OUTPUT, "Evaluate every N epochs (0: only at the end).")
    on_nonfinite: str = option(
        "stop",
        OUTPUT,
        "What a NaN or inf loss (or gradient) does, on every worker at the step it appears: "
        "stop (exit 3, the checkpoints keep their finite weights) or rollback (back to the last "
        f"checkpoint, skipping the batches since; at most {MAX_ROLLBACKS} times in a row).",
        choices=NONFINITE_ACTIONS,
    )
    verbose: int = option(
        1,
        OUTPUT,
        "0: quiet, 1: progress (a bar in a terminal, plain lines in a file or pipe), 2: also "
        "TensorFlow's own logs (-v for short).",
    )
    log_every: int = option(
        100,
        OUTPUT,
        "Steps between progress lines when the output is not a terminal (each epoch gets one).",
    )
    # Export (by the command line, after `run`).
    export_dir: str | None = option(
        None,
        EXPORT,
        "After training, export the model (SavedModel for TF Serving + TFLite, see "
        "keras_preact.export) under this folder and verify every artifact against the "
        "Keras model.",
    )

    # The fields the user set (the recipes: the flags on the command line); a recipe
    # leaves them alone. None: those that differ from their defaults.
    given: tuple | None = dataclasses.field(default=None, compare=False, metadata=INTERNAL)

    def validate(self):
        """Raises ValueError naming the first bad field and what it accepts."""
        for name, allowed in (
            ("dataset", DATASETS),
            ("family", FAMILIES),
            ("strategy", STRATEGIES),
            ("schedule", SCHEDULES),
            ("unit_variant", UNIT_VARIANTS),
            ("shortcut", SHORTCUTS),
        ):
            check_choice(name, getattr(self, name), allowed)
        if not self.model_dir:
            raise ValueError("model_dir is required: where checkpoints, logs and the model go.")
        if self.family == "cifar":
            self._validate_cifar_model()
        else:
            self._validate_imagenet_model()
        check_choice("on_nonfinite", self.on_nonfinite, NONFINITE_ACTIONS)
        names = (
            "batch_size",
            "checkpoint_every",
            "keep_checkpoints",
            "steps_per_loop",
            "log_every",
        )
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        check_choice("verbose", self.verbose, (0, 1, 2))
        self._validate_length()
        self._validate_eval_only_and_finetune()
        self._validate_optimizer_and_sizes()
        self._validate_toolbox()

    def _validate_cifar_model(self):
        """The CIFAR net: a unit type and a depth it allows (6n+2, 9n+2, 3n+2), a width."""
        if self.unit is not None:
            check_choice("unit", self.unit, CIFAR_UNITS)
        cifar_units_per_stage(self.depth, self.unit or CIFAR_DEPTHS.get(self.depth, "basic"))
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}.")

    def _validate_imagenet_model(self):
        """The ImageNet net: one of the named depths and layouts; the depth fixes the unit."""
        check_choice("depth", self.depth, tuple(IMAGENET_DEPTHS))
        if self.layout is not None:
            check_choice("layout", self.layout, tuple(LAYOUTS))
        if self.unit is not None:
            raise ValueError("unit is fixed by the depth for ImageNet nets; leave it unset.")

    def _validate_length(self):
        """Training length (epochs or train_steps, not both), steps per epoch, eval_every."""
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

    def _validate_eval_only_and_finetune(self):
        """eval_only needs weights and no export; a training finetune run needs a length."""
        if self.eval_only and self.weights is None:
            raise ValueError(
                "eval_only needs weights: the model to evaluate ('imagenet', a source name or "
                "a checkpoint file)."
            )
        if self.freeze == "backbone" and self.weights is None:
            raise ValueError(
                "freeze='backbone' trains only the classifier: give weights to start the "
                "backbone from."
            )
        if self.eval_only and self.export_dir:
            raise ValueError("eval_only trains no model, so export_dir has nothing to export.")
        if self.schedule in ("finetune", "cosine") and not self.eval_only:
            if self.epochs is None and self.train_steps is None:
                raise ValueError(
                    f"The {self.schedule} schedule has no default length: give epochs or "
                    "train_steps."
                )

    def _validate_optimizer_and_sizes(self):
        """Optimizer settings, image and eval crop sizes, and what jit_compile excludes."""
        lr = 0.1 if self.learning_rate is None else self.learning_rate
        if lr <= 0 or not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError("Need learning_rate > 0, 0 <= momentum < 1, weight_decay >= 0.")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {self.image_size}.")
        if any(size < 32 for size in self.eval_crop_sizes):
            raise ValueError(f"eval_crop_sizes must be >= 32, got {self.eval_crop_sizes}.")
        if self.jit_compile and self.sync_batchnorm:
            raise ValueError("sync_batchnorm all-reduces inside the step; it cannot jit_compile.")

    def _validate_toolbox(self):
        """The fine-tuning toolbox: recipe, optimizer, loss, augmentation, EMA, accumulation."""
        for name, allowed in (
            ("recipe", RECIPE_NAMES),
            ("optimizer", OPTIMIZERS),
            ("loss", LOSSES),
            ("tta", TTA_MODES),
        ):
            check_choice(name, getattr(self, name), allowed)
        for name, low, high in (
            ("label_smoothing", 0, 1),
            ("ema_decay", 0, 1),
            ("drop_path_rate", 0, 1),
            ("random_erasing", 0, 1.0000001),
        ):
            value = getattr(self, name)
            if not low <= value < high:
                raise ValueError(f"{name} must be in [{low}, {high:.0f}), got {value}.")
        for name in ("mixup_alpha", "cutmix_alpha", "linear_probe_epochs", "warmup_epochs"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("gradient_accumulation_steps", "randaugment_ops", "lr_reference_batch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}.")
        if not 0 <= self.randaugment_magnitude <= 10 or self.randaugment_std < 0:
            raise ValueError("Need 0 <= randaugment_magnitude <= 10 and randaugment_std >= 0.")
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by gradient_accumulation_steps "
                f"{self.gradient_accumulation_steps} (the micro-batches split the batch)."
            )
        if self.linear_probe_epochs and (self.weights is None or self.freeze != "none"):
            raise ValueError(
                "linear_probe_epochs trains the classifier first and then everything: it needs "
                "weights to start from, and no freeze."
            )

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    def resume_mismatches(self, saved):
        """Fields of a saved config (a dict) that differ from this one and forbid resuming."""
        return {
            key: (saved.get(key), getattr(self, key))
            for key in RESUME_FIELDS
            if key in saved and saved[key] != getattr(self, key)
        }
