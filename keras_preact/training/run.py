"""`run(config)`: one whole training run, from a `TrainConfig` to the files in `model_dir`.

Order of work: check the config, create the strategy (first: a multi-worker
strategy must exist before any other TensorFlow op), check the batch size
against the replicas, check the data is there, build model and optimizer,
restore the latest checkpoint, train with `Trainer`, evaluate on the held-out
split (ImageNet: at every `eval_crop_sizes`), save. Anything wrong with the
input raises `ConfigError` before the first training step. A run that
diverges raises `Diverged` and one whose disk fills up
`keras_preact.files.DiskFullError`, each with a one-line message saying what
was kept (see `Trainer`); unreadable checkpoints are set aside on resuming (a
run left with none starts again from `config.weights`).

`config.weights` (a source name, `"imagenet"` or a checkpoint file) starts the
network from pretrained weights; the layout follows them unless
`config.layout` is set, and on a resumed run the checkpoint wins (the weights
are not loaded). Evaluation crops use the weights' evaluation protocol
(a named source's resize interpolation and crop fraction, else the paper's:
`keras_preact.preprocessing.eval_preprocessing`). With `config.eval_only`,
`run` evaluates the weights at every eval crop size and writes only
`metrics.json` (and `skipped_files.txt` if images were skipped).

Files the chief writes to `model_dir` (names and the one atomic write:
`keras_preact.run_dir`; none is ever half-written):

* `config.json`: the run's `TrainConfig` (a resumed run must match it).
* `checkpoints/`, `logs/`, `history.csv`, `history.json`: see `Trainer`.
* `metrics.json`: final test metrics (top-1 / top-5 / loss, per crop size for
  ImageNet), steps, time, the initial `weights` and the `eval_preprocessing` used,
  and `skipped_images`: how many distinct images the input skipped as unreadable.
* `skipped_files.txt`: the names (paths) of those images, sorted, one per line,
  when there are any; rewritten after each epoch that finds new ones (each new
  one is also printed once, to stderr, between epochs: the first 10 by name).
* `model.keras`: the trained model with a softmax head, float32 (loadable
  with `keras.models.load_model` once `keras_preact` is imported): a
  `ResNetV2` whose config holds its architecture and eval protocol
  (`model.eval_protocol`), as a builder's does.
* `model.weights.h5`: the same weights, for `keras_preact.<Builder>(weights=path)`
  with the same architecture arguments.
* `spec.json` (+ `labels.txt`): the `keras_preact.run_dir.ModelSpec`: the
  model's class and config (explicit layout, no weights), class names,
  normalisation, eval crop sizes, interpolation and crop fraction, and the
  training data. `python -m export --model_dir=...` reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_preact import console, data, models, run_dir
from keras_preact import weights as weights_lib
from keras_preact.data import pipeline
from keras_preact.files import DiskFullError
from keras_preact.models.common import check_cifar_weights
from keras_preact.models.float32 import float32_copy
from keras_preact.models.imagenet import resolve_layout
from keras_preact.options import EvalProtocol, ShortcutOptions
from keras_preact.preprocessing import normalization_stats
from keras_preact.training import recipes
from keras_preact.training.config import ConfigError, TrainConfig
from keras_preact.training.loop import Trainer
from keras_preact.training.optimizer import layer_decay_multipliers, make_optimizer
from keras_preact.training.schedules import (
    BIT_LEARNING_RATE,
    BIT_REFERENCE_BATCH,
    CIFAR_REFERENCE_BATCH,
    FINETUNE_LEARNING_RATE,
    FINETUNE_REFERENCE_BATCH,
    FINETUNE_WARMUP_FRACTION,
    IMAGENET_EPOCHS,
    IMAGENET_REFERENCE_BATCH,
    bit_schedule,
    bit_supports,
    cifar_schedule,
    cifar_total_steps,
    cosine_schedule,
    imagenet_schedule,
    scaled_learning_rate,
)
from keras_preact.training.strategy import is_chief, make_strategy


def resolve_weights(config):
    """`config.weights` resolved (`keras_preact.weights.ResolvedWeights`), or None without weights.

    Raises ValueError, before anything is built or downloaded, for an unknown
    source, a missing file, weights of another depth, an explicit layout the
    weights cannot fill, or ImageNet weights for a CIFAR net.
    """
    w = config.weights
    if w is None:
        return None
    if config.family == "cifar":
        try:
            check_cifar_weights(w)
        except ValueError:
            raise ValueError(
                f"weights={w!r} are ImageNet weights; a CIFAR net starts from a .weights.h5 / "
                ".keras file of a CIFAR net (ImageNet weights: family 'imagenet', "
                "recipes/imagenet.py)."
            ) from None
        resolved = weights_lib.resolve(w)
    else:
        resolved = weights_lib.resolve(w, depth=config.depth, layout=config.layout)
    if resolved.kind != "source" and not os.path.isfile(resolved.weights):
        raise ValueError(f"Weights file not found: weights={w!r}.")
    return resolved


def run_layout(config):
    """The layout of an ImageNet run's network: `config.layout`, else its weights', else "paper"
    (`keras_preact.models.imagenet.resolve_layout`)."""
    return resolve_layout(config.depth, config.weights, config.layout)[0].name


def builder_call(config, info):
    """`(builder name, keyword arguments)`: the `keras_preact` call that builds the network.

    Saved in `model_dir/spec.json`, so `model.weights.h5` can be loaded
    with `getattr(keras_preact, name)(weights=path, **kwargs)` (the
    normalisation, for one, is an argument and not in the weights file). The
    ImageNet layout is always explicit (`run_layout`); `config.weights` is not
    an argument here (`build_model` takes it).

    >>> from keras_preact.data import dataset_info
    >>> builder_call(TrainConfig(dataset="digits", depth=20), dataset_info("digits"))[1]["depth"]
    20
    """
    kwargs = ShortcutOptions.from_object(config).as_kwargs()
    kwargs.update(depth=config.depth, classes=info.num_classes, unit_variant=config.unit_variant)
    if config.drop_path_rate:
        kwargs.update(drop_path_rate=config.drop_path_rate)
    if config.family == "cifar":
        size = config.image_size or info.image_size
        kwargs.update(
            unit=config.unit,
            input_shape=[size, size, 3],
            normalization=info.normalization,
            width=config.width,
        )
        return "CIFARResNetV2", kwargs
    kwargs.update(layout=run_layout(config))
    return "ImageNetResNetV2", kwargs


def build_model(
    config, info, *, classifier_activation=None, weights=None, remat=False, eval_protocol=None
):
    """The network `config` describes, for dataset `info` (a `DatasetInfo`).

    Training uses logits (`classifier_activation=None`); the saved model a softmax.
    `weights` is what the builder takes (`config.weights` for a fresh run);
    `remat` rematerialises the units; `eval_protocol` is the one the model
    carries (its weights source's, also when a resumed run loads no weights).
    """
    name, kwargs = builder_call(config, info)
    return getattr(models, name)(
        classifier_activation=classifier_activation,
        weights=weights,
        remat=remat,
        eval_protocol=eval_protocol,
        **kwargs,
    )


def mixed_precision_policy(strategy):
    """The Keras policy `--mixed_precision` trains with under `strategy`.

    mixed_float16 (with loss scaling) where the strategy's devices are GPUs, whose
    tensor cores are float16's; mixed_bfloat16 (no loss scaling needed) on TPUs and
    CPUs, where bfloat16 is the native half type and float16 is emulated (far slower:
    BENCHMARKS.md, `benchmarks/model_throughput.py`).

    >>> import tensorflow as tf
    >>> mixed_precision_policy(tf.distribute.OneDeviceStrategy("/cpu:0"))
    'mixed_bfloat16'
    """
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: TensorFlow's placement, a GPU if there is one
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    gpu = any(tf.DeviceSpec.from_string(d).device_type == "GPU" for d in devices)
    return "mixed_float16" if gpu else "mixed_bfloat16"


def freeze(model, what):
    """Makes part of `model` untrainable: `"backbone"` (every layer but the classifier
    `predictions`) or `"bn"` (every BatchNormalization); `"none"` changes nothing.

    A Keras layer that is not trainable gets no gradient step, and a frozen
    BatchNormalization normalises with its moving statistics and leaves them
    as they are (the Keras transfer-learning guide's rule).

    >>> import keras_preact
    >>> model = freeze(keras_preact.ResNet20V2(), "backbone")
    >>> [w.path for w in model.trainable_weights]
    ['predictions/kernel', 'predictions/bias']
    """
    for layer in model.layers:
        if what == "backbone" and layer.name != "predictions":
            layer.trainable = False
        elif what == "bn":
            for sub in layer._flatten_layers(include_self=True, recursive=True):
                if isinstance(sub, keras.layers.BatchNormalization):
                    sub.trainable = False
    return model


def synchronize_batchnorm(model):
    """Makes every BatchNormalization layer of `model` use cross-replica batch statistics."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return model


def run(config: TrainConfig):
    """Trains, evaluates and saves the model `config` describes; returns the final metrics.

    The metrics are those written to `model_dir/metrics.json`, plus `chief`
    (whether this process wrote the files). With `config.eval_only`, only
    evaluates `config.weights` (see the module docstring).

    Example:

    >>> metrics = run(TrainConfig(dataset="digits", model_dir="demo_run", depth=20, epochs=15))
    ... # doctest: +SKIP
    >>> metrics["test_accuracy"]  # top-1 on the held-out digits test split  # doctest: +SKIP
    """
    previous_policy = keras.mixed_precision.global_policy()
    try:
        job = _Run(config)
        return job.evaluate() if config.eval_only else job.train()
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


class _Run:
    def __init__(self, config):
        try:
            config.validate()
            self.resolved = resolve_weights(config)
            if config.family == "imagenet":  # spec.json and config.json name the layout
                config = dataclasses.replace(config, layout=run_layout(config))
            # A named source's protocol (else the paper's): the model carries it.
            self.eval_protocol = (self.resolved and self.resolved.eval_protocol) or EvalProtocol()
            if config.data_dir is not None and not tf.io.gfile.isdir(config.data_dir):
                raise ValueError(
                    f"data_dir {config.data_dir!r} does not exist (or is not a folder)."
                )
            # First TensorFlow work: a multi-worker strategy must exist before any other op.
            self.strategy = make_strategy(config.strategy, config.tpu)
            self.chief = is_chief(self.strategy)
            self.info = data.dataset_info(config.dataset, config.data_dir)
            self.config = config = recipes.apply_recipe(config, self.info.num_examples.get("train"))
            config.validate()
            self._check_batch_split()
            self.eval_crops = tuple(config.eval_crop_sizes) or (None,)
            # Build (not read) every pipeline once, so missing data fails here.
            splits = [] if config.eval_only else [("train", True)]
            for split, training in [*splits, (self.info.eval_split, False)]:
                self._dataset(split, training, None, self.eval_crops[0])
            if not config.eval_only:
                self._plan_steps()
            self._check_model_dir()
        except ValueError as e:  # includes data.MissingDataError
            raise ConfigError(str(e)) from e

    def _check_batch_split(self):
        """The global batch splits over the replicas, and each replica's into micro-batches."""
        c, replicas = self.config, self.strategy.num_replicas_in_sync
        if c.batch_size % replicas:
            raise ValueError(
                f"batch_size {c.batch_size} (global) is not divisible by the {replicas} "
                f"replicas of strategy {c.strategy!r}; use a multiple of {replicas}."
            )
        replica_batch = c.batch_size // replicas
        if replica_batch % c.gradient_accumulation_steps:
            raise ValueError(
                f"Each of the {replicas} replicas gets {replica_batch} images, which "
                f"gradient_accumulation_steps {c.gradient_accumulation_steps} cannot split "
                "evenly; use a batch_size that divides."
            )

    # ------------------------------------------------------------------ setup

    def _dataset(
        self,
        split,
        training,
        input_context,
        eval_crop_size=None,
        seed=None,
        augmentation=None,
        tta="none",
    ):
        c = self.config
        return data.make_dataset(
            c.dataset,
            split,
            batch_size=c.batch_size,
            data_dir=c.data_dir,
            download=c.download,
            training=training,
            image_size=c.image_size,
            eval_crop_size=eval_crop_size,
            seed=seed,
            input_context=input_context,
            repeat=training,
            color_augment=c.color_augment and training,
            eval_preprocessing=self.eval_protocol.crop_settings(),
            augmentation=augmentation if training else None,
            tta=tta,
        )

    def _augmentation(self, model):
        """The training `data.Augmentation` the config asks for (None: none); erasing fills
        with noise of `model`'s input normalisation."""
        c = self.config
        if not (c.randaugment or c.random_erasing or c.mixup_alpha or c.cutmix_alpha):
            return None
        try:
            layer = model.get_layer("preprocessing")
            mean, std = (np.asarray(w.numpy()).tolist() for w in (layer.mean, layer.std))
        except ValueError:  # no normalisation inside the model: the dataset's statistics
            mean, std = (a.tolist() for a in normalization_stats(self.info.normalization))
        return data.Augmentation(
            randaugment=(
                (c.randaugment_ops, c.randaugment_magnitude, c.randaugment_std)
                if c.randaugment
                else None
            ),
            random_erasing=c.random_erasing,
            mixup_alpha=c.mixup_alpha,
            cutmix_alpha=c.cutmix_alpha,
            num_classes=self.info.num_classes,
            fill_mean=tuple(mean),
            fill_std=tuple(std),
        )

    def _eval_fn(self, crop, tta="none"):
        return lambda ctx: self._dataset(self.info.eval_split, False, ctx, crop, tta=tta)

    def _plan_steps(self):
        c = self.config
        examples = self.info.num_examples.get("train")
        if c.steps_per_epoch is not None:
            self.steps_per_epoch = c.steps_per_epoch
        elif examples is None:
            raise ValueError(
                f"The size of {c.dataset!r} 'train' is unknown; pass steps_per_epoch "
                "(training examples // batch_size)."
            )
        else:
            if examples < c.batch_size:
                raise ValueError(
                    f"batch_size {c.batch_size} is larger than the {examples} training examples."
                )
            self.steps_per_epoch = examples // c.batch_size
        if c.train_steps is not None:
            self.total_steps = c.train_steps
        elif c.epochs is not None:
            self.total_steps = max(1, math.ceil(c.epochs * self.steps_per_epoch))
        elif c.schedule == "cifar":
            self.total_steps = cifar_total_steps(c.batch_size)
        elif c.schedule == "bit":
            self.total_steps = bit_supports(examples or 0)[-1]
        else:
            self.total_steps = IMAGENET_EPOCHS * self.steps_per_epoch
        self.schedule = self._schedule(examples)

    def peak_learning_rate(self):
        """The peak learning rate at the run's batch size (`config.learning_rate`, scaled).

        The defaults: SGD 0.1 at the family's batch (CIFAR 128, ImageNet 256),
        0.01 at 256 for finetune, BiT's 0.003 at 512; AdamW and LAMB 0.001 at
        256. SGD scales linearly, AdamW and LAMB by the square root.
        """
        c = self.config
        adaptive = c.optimizer != "sgd"
        if c.schedule == "bit":
            lr, reference = BIT_LEARNING_RATE, BIT_REFERENCE_BATCH
        elif adaptive:
            lr, reference = 0.001, IMAGENET_REFERENCE_BATCH
        elif c.schedule == "finetune":
            lr, reference = FINETUNE_LEARNING_RATE, FINETUNE_REFERENCE_BATCH
        else:
            lr = 0.1
            reference = CIFAR_REFERENCE_BATCH if c.family == "cifar" else IMAGENET_REFERENCE_BATCH
        lr = lr if c.learning_rate is None else c.learning_rate
        reference = reference if c.lr_reference_batch is None else c.lr_reference_batch
        scaling = "sqrt" if adaptive else "linear"
        return scaled_learning_rate(lr, c.batch_size, reference, scaling)

    def _schedule(self, examples):
        """The learning-rate schedule of `config.schedule` over `total_steps`."""
        c = self.config
        peak = self.peak_learning_rate()
        if c.schedule in ("cifar", "imagenet"):  # their functions scale from their reference
            reference = CIFAR_REFERENCE_BATCH if c.schedule == "cifar" else IMAGENET_REFERENCE_BATCH
            base = peak * reference / c.batch_size
            if c.schedule == "cifar":
                return cifar_schedule(c.batch_size, self.total_steps, base_learning_rate=base)
            return imagenet_schedule(c.batch_size, self.steps_per_epoch, base_learning_rate=base)
        if c.schedule == "bit":
            stretch = None if c.train_steps is None and c.epochs is None else self.total_steps
            return bit_schedule(peak, bit_supports(examples or 0, stretch))
        if c.warmup_epochs is not None:  # cosine / finetune
            warmup = round(c.warmup_epochs * self.steps_per_epoch)
        else:
            warmup = round(FINETUNE_WARMUP_FRACTION * self.total_steps)
        return cosine_schedule(peak, self.total_steps, warmup)

    def _check_model_dir(self):
        c = self.config
        path = os.path.join(c.model_dir, run_dir.CONFIG)
        has_checkpoint = tf.train.latest_checkpoint(os.path.join(c.model_dir, run_dir.CHECKPOINTS))
        self.resuming = bool(has_checkpoint)  # then the checkpoint wins over config.weights
        if c.eval_only:
            if has_checkpoint:
                raise ValueError(
                    f"model_dir {c.model_dir!r} holds a training run; evaluating there would "
                    "replace its metrics.json. Use a new --model_dir."
                )
            return
        if has_checkpoint and tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                saved = json.load(f)
            mismatches = c.resume_mismatches(saved)
            if mismatches:
                details = ", ".join(
                    f"{k}: {old!r} there, {new!r} now" for k, (old, new) in mismatches.items()
                )
                raise ValueError(
                    f"model_dir {c.model_dir!r} holds a run with other settings ({details}). "
                    "Use a new --model_dir, or the same flags to resume it."
                )
        if self.chief:
            tf.io.gfile.makedirs(c.model_dir)
            run_dir.atomic_write(path, c.to_json())

    def _build_trainer(self, weights):
        """The `Trainer`, its model built with `weights`; unusable weights raise `ConfigError`."""
        c = self.config
        policy = mixed_precision_policy(self.strategy) if c.mixed_precision else None

        built = {}  # the model, for the optimizer's layer-wise rates (Trainer builds it first)

        def model_fn():
            if c.seed is not None:
                keras.utils.set_random_seed(c.seed)
            model = build_model(
                c, self.info, weights=weights, remat=c.remat, eval_protocol=self.eval_protocol
            )
            freeze(model, c.freeze)
            built["model"] = model
            return synchronize_batchnorm(model) if c.sync_batchnorm else model

        def optimizer_fn():
            schedule = 0.0 if c.eval_only else self.schedule  # eval_only never applies it
            optimizer = make_optimizer(
                c.optimizer,
                schedule,
                momentum=c.momentum,
                weight_decay=c.weight_decay,
                learning_rate_multipliers=c.layer_decay
                and layer_decay_multipliers(built["model"], c.layer_decay),
            )
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            return optimizer

        if policy:
            keras.mixed_precision.set_global_policy(policy)
        try:
            return Trainer(
                self.strategy,
                model_fn,
                optimizer_fn,
                global_batch_size=c.batch_size,
                model_dir=None if c.eval_only else c.model_dir,
                checkpoint_every=c.checkpoint_every,
                keep_checkpoints=c.keep_checkpoints,
                steps_per_loop=c.steps_per_loop,
                jit_compile=c.jit_compile,
                verbose=c.verbose if self.chief else 0,
                on_nonfinite=c.on_nonfinite,
                log_every=c.log_every,
                loss=c.loss,
                label_smoothing=c.label_smoothing,
                gradient_accumulation_steps=c.gradient_accumulation_steps,
                ema_decay=0.0 if c.eval_only else c.ema_decay,
            )
        except (
            ValueError,
            weights_lib.WeightsDownloadError,
        ) as e:  # weights that do not fit, or no download
            raise ConfigError(str(e)) from e

    def _weights_name(self):
        """The initial weights as metrics.json names them (a source's full name for "imagenet")."""
        source = self.resolved and self.resolved.source
        return source.name if source else self.config.weights

    def _run_metrics(self, trainer):
        """metrics.json's description of the run: data, model, weights, distribution."""
        c = self.config
        return {
            "dataset": c.dataset,
            "eval_split": self.info.eval_split,
            "model": trainer.model.name,
            "parameters": trainer.model.count_params(),
            "weights": self._weights_name(),
            "eval_preprocessing": self.eval_protocol.as_dict(),
            "strategy": c.strategy,
            "replicas": self.strategy.num_replicas_in_sync,
            "global_batch_size": c.batch_size,
            "peak_learning_rate": None if c.eval_only else self.peak_learning_rate(),
            "recipe": recipes.settings(c),
        }

    def _test_metrics(self, results):
        """metrics.json's test entries from `{crop size: Trainer.evaluate(...)}`."""
        first = results[self.eval_crops[0]]
        metrics = {
            "test_examples": first["count"],
            "test_loss": first["loss"],
            "test_accuracy": first["top1"],
            "test_top1": first["top1"],
            "test_top5": first["top5"],
        }
        if self.eval_crops != (None,):
            for crop, result in results.items():
                metrics[f"test_top1_{crop}"] = result["top1"]
                metrics[f"test_top5_{crop}"] = result["top5"]
                metrics[f"test_loss_{crop}"] = result["loss"]
        return metrics

    # ------------------------------------------------------------ evaluation

    def evaluate(self):
        """eval_only: evaluates `config.weights` at every eval crop size, writes metrics.json."""
        c = self.config
        trainer = self._build_trainer(c.weights)
        if self.chief and c.verbose and (line := console.device_line()):
            print(line)
        skipped = _SkippedImages(c.model_dir, self.chief)
        began = time.time()
        results = {crop: self._evaluate(trainer, crop) for crop in self.eval_crops}
        trainer.close()
        skipped.report()
        metrics = {
            **self._run_metrics(trainer),
            "eval_seconds": round(time.time() - began, 2),
            "skipped_images": skipped.count,
            **self._test_metrics(results),
        }
        source = self.resolved.source
        if source is not None:  # the publisher's figures, as fractions like the measurements
            metrics["published_in"] = source.published
            for size, (top1, top5) in sorted(source.accuracy.items()):
                metrics[f"published_top1_{size}"] = round(top1 / 100, 6)
                metrics[f"published_top5_{size}"] = None if top5 is None else round(top5 / 100, 6)
        if self.chief:
            for crop, result in results.items():
                published = source and source.accuracy.get(crop)
                if c.verbose:  # one line per crop size, the publisher's top-1 beside ours
                    print(
                        f"{metrics['weights']} at {crop or 'its size'}: top-1 {result['top1']:.2%}"
                        + (f" (published: {published[0]:.2f}%)" if published else "")
                    )
            tf.io.gfile.makedirs(c.model_dir)
            run_dir.write_json(os.path.join(c.model_dir, run_dir.METRICS), metrics)
        return dict(metrics, chief=self.chief)

    # --------------------------------------------------------------- training

    def train(self):
        c = self.config
        trainer, start = self._start_trainer()
        # A resumed run restarts the input pipeline: reseed it, so it does not
        # replay the batches the run began with.
        seed = None if c.seed is None else c.seed + start
        augmentation = self._augmentation(trainer.model)

        def train_fn(ctx):
            return self._dataset("train", True, ctx, seed=seed, augmentation=augmentation)

        skipped = _SkippedImages(c.model_dir, self.chief, resuming=self.resuming)
        began = time.time()
        history = self._fit(trainer, train_fn, skipped)
        train_seconds = time.time() - began
        results, raw = self._final_evaluation(trainer)
        trainer.close()
        skipped.report()
        metrics = {
            **self._run_metrics(trainer),
            "steps": trainer.current_step,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": trainer.current_step / self.steps_per_epoch,
            "resumed_from_step": start,
            "train_seconds": round(train_seconds, 2),
            "final_learning_rate": trainer.learning_rate(),
            "train_loss": history[-1]["loss"] if history else None,
            "skipped_images": skipped.count,
            **self._test_metrics(results),
        }
        if raw is not None:  # the saved model is the weight average; the raw weights' figures
            metrics.update(
                saved_weights="ema",
                test_top1_ema=metrics["test_top1"],
                test_top1_raw=raw["top1"],
                test_top5_raw=raw["top5"],
                test_loss_raw=raw["loss"],
            )
        if self.chief:
            self._save(trainer, metrics)
        return dict(metrics, chief=self.chief)

    def _start_trainer(self):
        """The `Trainer`, restored from the latest checkpoint, and the step it starts at."""
        c = self.config
        trainer = self._build_trainer(None if self.resuming else c.weights)
        start = trainer.restore()
        if self.resuming and not start:  # every checkpoint was unreadable (and set aside)
            trainer.close()
            trainer = self._build_trainer(c.weights)  # a fresh start, from config.weights
        if self.chief and c.verbose:
            if line := console.device_line():
                print(line)
            params = trainer.model.count_params()
            print(
                f"{trainer.model.name} ({params:,} parameters) on {c.dataset}, "
                f"{self.strategy.num_replicas_in_sync} replica(s), global batch {c.batch_size}, "
                f"{self.total_steps} steps ({self.steps_per_epoch} per epoch)."
            )
        if self.chief and start:  # printed at any verbosity: a resume should never go unnoticed
            print(f"Resuming from step {start} (learning rate {trainer.learning_rate():.4g}).")
        return trainer, start

    def _fit(self, trainer, train_fn, skipped):
        """`trainer.fit` to `total_steps`; with `linear_probe_epochs`, the classifier alone first."""
        c = self.config

        def fit(total_steps):
            return trainer.fit(
                train_fn,
                total_steps=total_steps,
                steps_per_epoch=self.steps_per_epoch,
                eval_dataset_fn=self._eval_fn(self.eval_crops[0]),
                eval_every=c.eval_every,
                on_epoch_end=lambda row: skipped.report(),
            )

        probe_steps = min(self.total_steps, round(c.linear_probe_epochs * self.steps_per_epoch))
        if trainer.current_step < probe_steps:
            freeze(trainer.model, "backbone")
            trainer.trainable_variables_changed()
            fit(probe_steps)
            for layer in trainer.model.layers:
                layer.trainable = True
            trainer.trainable_variables_changed()
        return fit(self.total_steps)

    def _final_evaluation(self, trainer):
        """`({crop size: metrics}, raw)`: the saved model's metrics at every eval crop size (with
        `tta`), and with a weight average the raw weights' at the first crop (else None)."""
        c, first = self.config, self.eval_crops[0]
        averaged = trainer.ema is not None
        results = {}
        last = trainer.last_eval  # the saved model's (the average's, with one)
        if last is not None and last["step"] == trainer.current_step and c.tta == "none":
            results[first] = last  # fit evaluated after its last step
        for crop in self.eval_crops:
            if crop not in results:
                results[crop] = self._evaluate(trainer, crop, averaged)
        raw = None
        if averaged:
            row = trainer.history[-1] if trainer.history else {}
            if row.get("step") == trainer.current_step and "val_top1" in row and c.tta == "none":
                raw = {k: row[f"val_{k}"] for k in ("loss", "top1", "top5")}
            else:
                raw = self._evaluate(trainer, first)
        return results, raw

    def _evaluate(self, trainer, crop, averaged=False):
        """`trainer.evaluate` at eval crop size `crop`, with the run's test-time augmentation."""
        tta = self.config.tta
        return trainer.evaluate(self._eval_fn(crop, tta), averaged=averaged, views=tta != "none")

    def _save(self, trainer, metrics):
        """Writes model.keras, model.weights.h5, spec.json, labels.txt and metrics.json.

        The model is the weight average when there is one. Each file is
        written whole or not at all; a full disk raises `DiskFullError` saying
        that a rerun (from the final checkpoint) writes them.
        """
        c = self.config
        with trainer.ema.swapped() if trainer.ema is not None else contextlib.nullcontext():
            model = float32_copy(trainer.model, dynamic_hw=False, classifier_activation="softmax")
        size = sum(int(np.prod(w.shape)) * 4 for w in model.weights)  # float32
        try:
            for name, save in ((run_dir.MODEL, model.save), (run_dir.WEIGHTS, model.save_weights)):
                with run_dir.atomic_path(os.path.join(c.model_dir, name), needed=size) as tmp:
                    save(tmp)
            run_dir.write_spec(c.model_dir, self.spec(model))
            run_dir.write_json(os.path.join(c.model_dir, run_dir.METRICS), metrics)
        except DiskFullError as e:
            raise DiskFullError(
                f"{e} Training itself finished (its last checkpoint is step {metrics['steps']}): "
                "free space and run the same command again to write the model files.",
                e.filename,
            ) from None

    def spec(self, model):
        """The run's `keras_preact.run_dir.ModelSpec`: `model`'s config and the run's data."""
        c = self.config
        size = c.image_size or self.info.image_size or 224
        return run_dir.ModelSpec.of_model(
            model,
            labels=list(self.info.class_names),
            image_size=int(size),
            # ImageNet-style nets evaluate centre crops; CIFAR-style ones whole images.
            eval_crop_sizes=[int(s) for s in c.eval_crop_sizes]
            or ([int(size)] if c.family == "imagenet" else []),
            dataset=c.dataset,
            data_dir=c.data_dir,
            weights=self._weights_name(),
        )


class _SkippedImages:
    """Reports the images the input pipelines skip as unreadable (`keras_preact.data.pipeline`).

    `report()`, between epochs and at the end, prints each image skipped since
    the last call once, to stderr, on its own line (the run's first `NAMED`
    by name, then how many more), and rewrites `<model_dir>/skipped_files.txt`
    with every name, sorted; only on the chief. A fresh run starts without
    the file; a resumed one keeps its names (not printed again).
    """

    NAMED = 10

    def __init__(self, model_dir, chief, resuming=False):
        self.path = os.path.join(model_dir, run_dir.SKIPPED_FILES)
        self.chief = chief
        self.named = 0
        pipeline.reset_skipped_images()
        if chief and tf.io.gfile.exists(self.path):
            if resuming:
                with tf.io.gfile.GFile(self.path) as f:
                    for name in f.read().splitlines():
                        pipeline.SKIPPED.add(name)
                pipeline.SKIPPED.take_unreported()
            else:
                tf.io.gfile.remove(self.path)

    @property
    def count(self):
        """How many distinct images were skipped (with a resumed run's earlier ones)."""
        return pipeline.skipped_images()

    def report(self):
        new = pipeline.SKIPPED.take_unreported()
        if not (new and self.chief):
            return
        named = new[: max(0, self.NAMED - self.named)]
        self.named += len(named)
        sys.stdout.flush()  # a terminal shows both streams: the epoch's lines first
        for name in named:
            print(f"Skipped an image that could not be read or decoded: {name}", file=sys.stderr)
        if len(new) > len(named):
            print(f"... and {len(new) - len(named)} more (see {self.path})", file=sys.stderr)
        sys.stderr.flush()
        tf.io.gfile.makedirs(os.path.dirname(self.path))
        names = pipeline.skipped_image_names()
        run_dir.atomic_write(self.path, "".join(f"{name}\n" for name in names))
