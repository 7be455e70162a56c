"""Trains a pre-activation ResNet on CIFAR-style data (CIFAR-10/100, digits, ...) with the paper's recipe.

Thin command line over `keras_preact.training` (flags: `--helpfull`, or
`keras_preact/training/flags.py`). Example:

    python recipes/cifar.py --model_dir=runs/cifar --strategy=mirrored

A killed run restarted with the same command resumes from its last checkpoint.
The last line printed is the test accuracy; `<model_dir>/metrics.json` has it too.
With `--export_dir`, the trained model is also exported and verified (export/).
"""

import os
import sys

# Run from a checkout without installing: make the repository importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import recipe_common  # noqa: E402  (recipes/recipe_common.py)
from absl import app  # noqa: E402

from keras_preact.training import flags as training_flags  # noqa: E402

training_flags.define_flags("cifar")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config, metrics = training_flags.main("cifar")
    recipe_common.finish(config, metrics)


if __name__ == "__main__":
    app.run(main)
