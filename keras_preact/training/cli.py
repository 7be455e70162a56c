"""The recipes' command line: `keras-preact-cifar` and `keras-preact-imagenet`.

From a checkout, `python recipes/cifar.py` and `python recipes/imagenet.py`
(the same commands); `--help` lists a recipe's flags by section. Each row of
the paper's Tables 1 and 2 is one command, for example (Table 2, ResNet-110
with "ReLU before addition"):

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

Bad input (found before any training step) exits with one `Error: ...` line in
flag words (status 1); the last line of a run is its test accuracy
(`result_line`). A run that diverges (a NaN or inf loss, `--on_nonfinite=stop`)
exits 3 and one whose disk is full exits 4, each with one `Error: ...` line
saying what was kept and how to go on; SIGTERM and Ctrl-C exit 143 and 130
after a checkpoint.
"""

from __future__ import annotations

import functools
import os
import sys

from absl import app, flags

from keras_preact import console
from keras_preact.export.pipeline import export_all
from keras_preact.files import DiskFullError
from keras_preact.training.config import GROUPS, ConfigError
from keras_preact.training.flags import config_from_flags, define_flags, flag_words
from keras_preact.training.loop import Diverged
from keras_preact.training.run import run

DISK_FULL_EXIT_CODE = 4

ABOUT = {
    "cifar": "Trains a pre-activation ResNet on CIFAR-style data (CIFAR-10/100, digits, ...) "
    "with the paper's recipe.",
    "imagenet": "Trains a pre-activation ResNet on ImageNet-style data (imagenet2012, folder, "
    "tfrecord) with the paper's recipe.",
}
USAGE = """{about}

USAGE: {prog} --model_dir=DIR [flags]
  e.g. {prog} --model_dir=runs/{family} --strategy=mirrored

A killed run restarted with the same command resumes from its last checkpoint.
The last line printed is the test accuracy; <model_dir>/metrics.json has it too.
Exit status: 0 done, 1 bad input, 3 diverged (NaN/inf loss), 4 disk full,
130/143 stopped by Ctrl-C/SIGTERM with a checkpoint."""


def cifar():
    """The `keras-preact-cifar` command (`recipes/cifar.py`)."""
    main("cifar")


def imagenet():
    """The `keras-preact-imagenet` command (`recipes/imagenet.py`)."""
    main("imagenet")


def main(family):
    """Defines `family`'s flags ("cifar" or "imagenet") and runs the recipe under absl."""
    define_flags(family)
    console.run(
        functools.partial(_main, family), functools.partial(usage, family), verbose="--verbose=2"
    )


def usage(family, flag_values=flags.FLAGS):
    """The recipe's --help: what it does, then its flags by section (`GROUPS`)."""
    prog = sys.argv[0]
    prog = f"python {prog}" if prog.endswith(".py") else os.path.basename(prog)
    lines = [USAGE.format(about=ABOUT[family], prog=prog, family=family)]
    lines += [flag_values.module_help(group) for group in GROUPS]
    lines.append("\nTry --helpfull to get a list of all flags.")
    return "\n".join(lines)


def _main(family, argv):
    """flags -> `TrainConfig` -> `run`; then the export (`--export_dir`) and the result line."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    console.quiet_python_logs()
    try:
        config = config_from_flags(family)
        metrics = run(config)
        if config.export_dir and metrics["chief"]:
            # The run directory says the rest: labels, crop, interpolation, calibration images.
            result = export_all(config.model_dir, config.export_dir, model_name=config.dataset)
            print(result.summary())
    except ConfigError as e:
        sys.exit(f"Error: {flag_words(str(e), family)}")
    except Diverged as e:
        _exit(f"Error: {flag_words(str(e), family)}", Diverged.EXIT_CODE)
    except DiskFullError as e:
        _exit(f"Error: {e}", DISK_FULL_EXIT_CODE)
    print(result_line(metrics))


def _exit(line, code):
    """Ends the recipe with one line on stderr (after what stdout holds) and exit status `code`."""
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def result_line(metrics):
    """The line a recipe ends with: the top-1 accuracy on the held-out split."""
    return (
        f"Test accuracy: {100 * metrics['test_accuracy']:.2f}% (top-1 on "
        f"{metrics['test_examples']} held-out {metrics['dataset']} {metrics['eval_split']} images)"
    )
