"""Training: strategy factory, the paper's schedules, coupled-L2 SGD, one custom loop, `run`.

>>> from keras_preact import training
>>> config = training.TrainConfig(dataset="digits", model_dir="demo_run", depth=20, epochs=15)
>>> training.TrainConfig(dataset="digits", model_dir="demo_run", depth=21).validate()
Traceback (most recent call last):
    ...
ValueError: Invalid depth 21 for 'basic' units: CIFAR depth must be 6n+2 with n >= 1 (e.g. 8, 14, 20, 110).
>>> metrics = training.run(config)  # trains, evaluates, writes model_dir/metrics.json etc.
... # doctest: +SKIP

Pieces, usable on their own:

* `make_strategy(name)`: `default`, `one_device`, `mirrored`,
  `multi_worker_mirrored`, `tpu`; `is_chief(strategy)`.
* `cifar_schedule`, `imagenet_schedule`, `step_schedule`: stock Keras
  `PiecewiseConstantDecay` schedules in steps, scaled to the global batch;
  `finetune_schedule` / `cosine_schedule`: warm-up and cosine decay (a stock
  `CosineDecay`); `bit_schedule`: BiT-HyperRule's warm-up and steps.
* `CoupledSGD`: SGD momentum 0.9 with L2 weight decay added to the gradient
  before momentum (the authors' Torch `optim.sgd`); `AdamW` and `Lamb` with
  decoupled decay on kernels only (timm's); `make_optimizer(name, ...)`.
* `WeightAverage`: an exponential moving average of a model's weights (EMA).
* `recipes`: the named presets of `--recipe` (paper, rsb_a3, bit).
* `Trainer`: the training loop (strategy.run + optimizer.apply) used under
  every strategy, with checkpoint/resume, TensorBoard, history and evaluation,
  and what it does on a fault: a non-finite loss (`Diverged`, or a rollback),
  an unreadable checkpoint (set aside), a full disk
  (`keras_preact.files.DiskFullError`).
"""

from keras_preact.requirements import require_tensorflow

require_tensorflow("keras_preact.training")

from keras_preact.training import recipes
from keras_preact.training.config import ConfigError, TrainConfig
from keras_preact.training.ema import WeightAverage
from keras_preact.training.loop import Diverged, Trainer
from keras_preact.training.optimizer import AdamW, CoupledSGD, Lamb, make_optimizer
from keras_preact.training.run import build_model, builder_call, run, synchronize_batchnorm
from keras_preact.training.schedules import (
    bit_schedule,
    cifar_schedule,
    cifar_total_steps,
    cosine_schedule,
    finetune_schedule,
    imagenet_schedule,
    step_schedule,
)
from keras_preact.training.strategy import STRATEGIES, is_chief, make_strategy

__all__ = [
    "STRATEGIES",
    "AdamW",
    "ConfigError",
    "CoupledSGD",
    "Diverged",
    "Lamb",
    "TrainConfig",
    "Trainer",
    "WeightAverage",
    "bit_schedule",
    "build_model",
    "builder_call",
    "cifar_schedule",
    "cifar_total_steps",
    "cosine_schedule",
    "finetune_schedule",
    "imagenet_schedule",
    "is_chief",
    "make_optimizer",
    "make_strategy",
    "recipes",
    "run",
    "step_schedule",
    "synchronize_batchnorm",
]
