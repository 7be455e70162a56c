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

if __name__ == "__main__":
    recipe_common.main("cifar")
