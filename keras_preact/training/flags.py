"""The recipes' absl flags and their mapping to a `TrainConfig`.

`recipes/cifar.py` and `recipes/imagenet.py` call `define_flags("cifar")` /
`define_flags("imagenet")` and `config_from_flags(...)`, so both command lines
share one definition. Each row of the paper's Tables 1 and 2 is one command,
for example (Table 2, ResNet-110 with "ReLU before addition"):

    python recipes/cifar.py --dataset=cifar10 --depth=110 \\
        --unit_variant=relu_before_addition --model_dir=runs/t2_relu_before_add

and (Table 1, exclusive gating with b_g = -6, on the original unit):

    python recipes/cifar.py --depth=110 --unit_variant=original \\
        --shortcut=exclusive_gating --gate_bias_init=-6 --model_dir=runs/t1_gating

Fine-tuning from a public checkpoint (the layout follows the weights), and
evaluating one as published (its own resize interpolation and crop fraction):

    python recipes/imagenet.py --dataset=folder --data_dir=photos --depth=50 \\
        --weights=keras:resnet50v2 --schedule=finetune --epochs=10 --model_dir=runs/ft
    python recipes/imagenet.py --eval_only --weights=timm:resnetv2_50.a1h_in1k \\
        --data_dir=/data/tensorflow_datasets --model_dir=runs/eval_r50
"""

from __future__ import annotations

import re
import sys

from absl import flags

from keras_preact.layers import SHORTCUTS, UNIT_VARIANTS
from keras_preact.training.config import CIFAR_UNITS, ConfigError, TrainConfig
from keras_preact.training.schedules import (
    CIFAR_REFERENCE_BATCH,
    FINETUNE_LEARNING_RATE,
    FINETUNE_REFERENCE_BATCH,
    IMAGENET_REFERENCE_BATCH,
)
from keras_preact.training.strategy import STRATEGIES

DEFAULTS = {
    "cifar": dict(
        dataset="cifar10", depth=110, batch_size=128, reference_batch=CIFAR_REFERENCE_BATCH
    ),
    "imagenet": dict(
        dataset="imagenet2012", depth=200, batch_size=256, reference_batch=IMAGENET_REFERENCE_BATCH
    ),
}


def define_flags(family, flag_values=flags.FLAGS):
    """Defines the flags of `recipes/<family>.py` ("cifar" or "imagenet") on `flag_values`."""
    from keras_preact.data import DATASETS
    from keras_preact.models.imagenet import LAYOUTS

    d = DEFAULTS[family]

    def define(kind, *args, **kwargs):
        return getattr(flags, f"DEFINE_{kind}")(*args, flag_values=flag_values, **kwargs)

    define("enum", "dataset", d["dataset"], DATASETS, "Dataset (keras_preact.data).")
    define(
        "string",
        "data_dir",
        None,
        "Where the dataset lives (tfds data_dir, image folder, TFRecords).",
    )
    define("bool", "download", False, "Let tensorflow-datasets download / prepare the data.")
    define("string", "model_dir", None, "Output: checkpoints, logs, metrics.json, model files.")
    flags.mark_flag_as_required("model_dir", flag_values=flag_values)
    define(
        "integer",
        "depth",
        d["depth"],
        "Network depth (CIFAR: 6n+2 basic, 9n+2 bottleneck, 3n+2 one_layer; ImageNet: 18..200).",
    )
    if family == "cifar":
        define(
            "enum",
            "unit",
            None,
            CIFAR_UNITS,
            "Unit type (default: bottleneck for 164 and 1001, else basic).",
        )
        define("integer", "width", 16, "Channels of the first stage (16 in the paper).")
        define("integer", "image_size", None, "Image size (default: the dataset's, 32).")
        define(
            "string",
            "weights",
            None,
            "Start from these weights: a .weights.h5 / .keras file of a CIFAR net built with the "
            "same flags (e.g. an earlier run's model.weights.h5). A resumed run restores its "
            "checkpoint instead.",
        )
    else:
        define(
            "enum",
            "layout",
            None,
            tuple(LAYOUTS),
            "Network layout: paper (the paper's appendix), timm, keras or fb "
            "(keras_preact.models.imagenet). Default: the one --weights need, else paper.",
        )
        define(
            "string",
            "weights",
            None,
            "Start from these weights: 'imagenet' (the depth's default public checkpoint), a "
            "source name (keras_preact.weights.sources(): timm:resnetv2_50.a1h_in1k, "
            "keras:resnet50v2, fb:resnet-200, ...) or a checkpoint file (timm .safetensors, "
            "keras.applications .h5, fb.resnet.torch .t7, Keras .weights.h5/.keras). The "
            "classifier is loaded only if it has the dataset's number of classes; evaluation "
            "uses the source's resize interpolation and crop fraction. A resumed run restores "
            "its checkpoint instead.",
        )
        define("integer", "image_size", 224, "Training crop size.")
        define(
            "list",
            "eval_crop_sizes",
            ["224", "320"],
            "Centre-crop sizes of the final evaluation (the paper: 224 and 320).",
        )
        define("bool", "color_augment", False, "fb.resnet.torch colour jitter and lighting noise.")
    define(
        "enum",
        "unit_variant",
        "full_preact",
        UNIT_VARIANTS,
        "Where BN/ReLU sit (the paper's Fig. 4 / Table 2).",
    )
    define(
        "enum", "shortcut", "identity", SHORTCUTS, "Shortcut type (the paper's Fig. 2 / Table 1)."
    )
    define("float", "shortcut_scale", None, "constant_scaling: scale of the shortcut (0.5).")
    define(
        "float",
        "residual_scale",
        None,
        "constant_scaling: scale of F (1.0; 0.5 for 'frozen gating').",
    )
    define(
        "float",
        "gate_bias_init",
        None,
        "exclusive/shortcut_only gating: initial gate bias b_g (0).",
    )
    define("float", "shortcut_dropout_rate", None, "dropout shortcut: drop rate (0.5).")
    define(
        "bool",
        "sync_batchnorm",
        False,
        "Batch statistics over all replicas (default: per replica, as the paper).",
    )
    define(
        "bool",
        "eval_only",
        False,
        "Only evaluate --weights on the eval split"
        + (" at every --eval_crop_sizes" if family == "imagenet" else "")
        + " (with the weights' own eval preprocessing) and write metrics.json to --model_dir; "
        "no training.",
    )
    define("integer", "batch_size", d["batch_size"], "GLOBAL batch size (split over the replicas).")
    define("float", "epochs", None, "Training length in epochs (default: the paper's).")
    define("integer", "train_steps", None, "Training length in steps (instead of --epochs).")
    define(
        "integer",
        "steps_per_epoch",
        None,
        "Steps per epoch (default: training examples // batch_size).",
    )
    define(
        "enum",
        "schedule",
        family,
        (family, "finetune"),
        f"Learning-rate schedule: {family} (the paper's) or finetune (for --weights: linear "
        "warm-up from 0 over the first 5% of the steps, then cosine decay to 0 at the last; "
        "needs --epochs or --train_steps).",
    )
    finetune_lr = f"{FINETUNE_LEARNING_RATE} with --schedule=finetune"
    if family == "cifar":
        finetune_lr += f", at batch {FINETUNE_REFERENCE_BATCH}"
    define(
        "float",
        "learning_rate",
        None,
        f"Learning rate at batch {d['reference_batch']} (default 0.1; {finetune_lr}); "
        "scaled linearly with --batch_size.",
    )
    define("float", "momentum", 0.9, "SGD momentum.")
    define(
        "float",
        "weight_decay",
        1e-4,
        "Coupled L2 weight decay (added to the gradient, all parameters).",
    )
    define("enum", "strategy", "default", STRATEGIES, "tf.distribute strategy.")
    define("string", "tpu", None, "TPU name or grpc:// address (--strategy=tpu).")
    define(
        "bool", "mixed_precision", False, "mixed_float16 (mixed_bfloat16 on TPU) with loss scaling."
    )
    define("bool", "jit_compile", False, "Compile the forward/backward pass with XLA.")
    define(
        "integer", "steps_per_loop", 1, "Steps per tf.function call (more: fewer host round trips)."
    )
    define("integer", "seed", None, "Random seed (weights init, shuffling, augmentation).")
    define("integer", "checkpoint_every", 1000, "Steps between checkpoints.")
    define("integer", "keep_checkpoints", 3, "Checkpoints kept.")
    define("integer", "eval_every", 1, "Evaluate every N epochs (0: only at the end).")
    define("integer", "verbose", 1, "1: progress bar, 0: quiet.")


def config_from_flags(family, values=None):
    """A `TrainConfig` from parsed flags (absl's FLAGS by default)."""
    f = values or flags.FLAGS
    config = TrainConfig(
        dataset=f.dataset,
        model_dir=f.model_dir,
        data_dir=f.data_dir,
        download=f.download,
        family=family,
        depth=f.depth,
        unit_variant=f.unit_variant,
        shortcut=f.shortcut,
        shortcut_scale=f.shortcut_scale,
        residual_scale=f.residual_scale,
        gate_bias_init=f.gate_bias_init,
        shortcut_dropout_rate=f.shortcut_dropout_rate,
        sync_batchnorm=f.sync_batchnorm,
        image_size=f.image_size,
        schedule=f.schedule,
        batch_size=f.batch_size,
        epochs=f.epochs,
        train_steps=f.train_steps,
        steps_per_epoch=f.steps_per_epoch,
        base_learning_rate=f.learning_rate,
        momentum=f.momentum,
        weight_decay=f.weight_decay,
        strategy=f.strategy,
        tpu=f.tpu,
        mixed_precision=f.mixed_precision,
        jit_compile=f.jit_compile,
        steps_per_loop=f.steps_per_loop,
        seed=f.seed,
        checkpoint_every=f.checkpoint_every,
        keep_checkpoints=f.keep_checkpoints,
        eval_every=f.eval_every,
        verbose=f.verbose,
        weights=f.weights,
        eval_only=f.eval_only,
    )
    if f.eval_only and f.weights is None:
        raise ConfigError(
            "--eval_only needs --weights: the model to evaluate ('imagenet', a source name or "
            "a checkpoint file)."
        )
    if family == "cifar":
        config.unit = f.unit
        config.width = f.width
    else:
        config.layout = f.layout
        config.color_augment = f.color_augment
        try:
            config.eval_crop_sizes = tuple(int(s) for s in f.eval_crop_sizes)
        except ValueError:
            raise ConfigError(
                f"--eval_crop_sizes must be integers, got {f.eval_crop_sizes}."
            ) from None
    return config


def main(family):
    """The recipes' main: flags -> config -> `run`; returns `(config, metrics)`.

    Bad input (found before any training step) exits with `Error: <what to do>`.
    """
    from absl import logging

    from keras_preact.training.run import run

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress bar
    try:
        config = config_from_flags(family)
        return config, run(config)
    except ConfigError as e:
        sys.exit(f"Error: {flag_words(str(e))}")


def flag_words(message):
    """A library error in command-line words: `weights=`, `layout=` -> `--weights=`, `--layout=`.

    >>> flag_words("weights='x' need layout='keras'. Leave layout unset, or use ResNet50V2.")
    "--weights='x' need --layout='keras'. Leave --layout unset, or use --depth=50."
    """
    message = re.sub(r"(?<![\w-])(weights|layout)(=| unset)", r"--\1\2", message)
    return re.sub(r"\b([Uu]se) ResNet(\d+)V2\b", r"\1 --depth=\2", message)


def result_line(metrics):
    """The line a recipe ends with: the top-1 accuracy on the held-out split."""
    return (
        f"Test accuracy: {100 * metrics['test_accuracy']:.2f}% (top-1 on "
        f"{metrics['test_examples']} held-out {metrics['dataset']} {metrics['eval_split']} images)"
    )
