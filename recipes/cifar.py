"""The CIFAR recipe from a checkout: `python recipes/cifar.py --help` (installed: `keras-preact-cifar`)."""

import os
import sys

# Run from a checkout without installing: make the repository importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_preact.training import cli  # noqa: E402

if __name__ == "__main__":
    cli.cifar()
