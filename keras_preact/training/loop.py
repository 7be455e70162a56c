"""One custom training loop for every tf.distribute strategy, with preemption-safe checkpoints.

Keras 3 `Model.fit` cannot train under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so `Trainer` runs its own loop, and runs it under
*every* strategy (default, one device, mirrored, multi-worker, TPU): one code
path to test, and checkpointing / resuming works the same everywhere.

A step is `strategy.run` of: forward pass, `tf.nn.compute_average_loss` over
the global batch, gradients, `optimizer.apply` (which all-reduces the
gradients across replicas and workers). Model, optimizer and the step counter
are created inside `strategy.scope()`.

Checkpoints (`tf.train.CheckpointManager`: model, optimizer with its
iteration counter and momentum, step counter) are written every
`checkpoint_every` steps and at the end. In a multi-worker cluster every
worker saves (the save may need collectives), but only the chief writes to
`model_dir`; the others write to a temporary directory that they delete at
once. On start, the latest checkpoint in `model_dir/checkpoints` is
restored, so a killed run restarted with the same command continues at the
same step and learning rate. SIGTERM (what schedulers and `docker stop` send
before killing) and Ctrl-C (SIGINT) end the run after the current step with a
checkpoint at that step, so no work is lost; in a multi-worker cluster a
signal to any worker stops them all at the same step (the request rides on the
step's all-reduce). A second Ctrl-C aborts at once.

Faults that would lose work are met the same way on every worker:

* **Divergence.** Each step checks that its loss and gradients are finite (a
  flag summed in the step's all-reduce, so every replica and worker sees a
  NaN or inf on any of them at the same step, and a `steps_per_loop` call
  ends there). With `on_nonfinite="stop"` (the default, as Keras'
  `TerminateOnNaN`) training stops with `Diverged`, one line naming the step
  and what to do; with `"rollback"` every worker goes back to the last
  checkpoint and goes on with the batches after the ones it had reached (the
  offending ones are skipped), at most `MAX_ROLLBACKS` times in a row. No
  checkpoint is written from non-finite weights (checked before each save):
  weights that became non-finite while the loss and gradients stayed finite
  (an update that overflowed) stop or roll back the same way there.
* **An unreadable checkpoint** (cut short by a crash or a full disk):
  `restore` sets it aside in `checkpoints/unreadable/` (renamed, not deleted),
  resumes from the newest readable one and says both in one line.
* **A full disk.** A checkpoint that does not fit has its partial files
  removed and raises `keras_preact.files.DiskFullError`: one line with the
  checkpoint, about how much it needed, how much was free, and the step a
  rerun resumes from (the earlier checkpoints are intact). In a cluster the
  workers agree after each save, so all of them stop there.

While training, a verbose chief prints Keras' progress bar in a terminal and
plain lines elsewhere (`keras_preact.training.progress`). Files in `model_dir`
(written by the chief):

* `checkpoints/`: the latest `keep_checkpoints` checkpoints.
* `logs/train`, `logs/eval`: TensorBoard scalars (loss, accuracy, learning rate).
* `history.csv`, `history.json`: one row per epoch (rewritten atomically).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_preact import files, run_dir
from keras_preact.options import check_choice
from keras_preact.training import checkpoint_files
from keras_preact.training.ema import WeightAverage
from keras_preact.training.progress import EpochProgress
from keras_preact.training.strategy import is_chief, task_info

NONFINITE_ACTIONS = ("stop", "rollback")
LOSSES = ("cross_entropy", "bce")
MAX_ROLLBACKS = 3  # rollbacks in a row (no new checkpoint between them) before a run stops
WEIGHTS_NOT_FINITE = "the weights became non-finite (an update overflowed)"  # seen at a save

HISTORY_FIELDS = (
    "epoch",
    "step",
    "learning_rate",
    "loss",
    "accuracy",
    "val_loss",
    "val_top1",
    "val_top5",
    "seconds",
)
EMA_HISTORY_FIELDS = ("val_loss_ema", "val_top1_ema", "val_top5_ema")  # with ema_decay


class Preempted(SystemExit):
    """Raised when a run stopped at a checkpoint on a stop signal (exit status 128 + its number).

    SIGTERM exits 143 and SIGINT (Ctrl-C) 130, as if the signal had ended the
    process; a worker that stopped because another worker got the signal exits 143.
    """

    def __init__(self, step, checkpoint, signal_name=None):
        number = signal.Signals[signal_name] if signal_name else signal.SIGTERM
        super().__init__(128 + number)
        self.step = step
        self.checkpoint = checkpoint
        self.signal_name = signal_name

    def __str__(self):
        cause = self.signal_name or "Another worker received a stop signal"
        return (
            f"{cause}: stopped at step {self.step} with a checkpoint ({self.checkpoint}); "
            "run the same command again to resume."
        )


class Diverged(RuntimeError):
    """The loss or a gradient became non-finite (NaN or inf); nothing from after it was saved.

    The message is one line: the step, the learning rate, the last checkpoint
    (whose weights are finite) and what to do. Recipes exit with `EXIT_CODE`.
    """

    EXIT_CODE = 3

    def __init__(self, message, step):
        super().__init__(message)
        self.step = step


class _NonFinite(Exception):
    """Inside `fit`: the step `step` gave a non-finite loss or gradient, or (`what`, from a
    checkpoint) left non-finite weights."""

    def __init__(self, step, loss, learning_rate, what=None):
        super().__init__(step)
        self.step, self.loss, self.learning_rate, self.what = step, loss, learning_rate, what


class StopSignals:
    """While active, SIGTERM and SIGINT (Ctrl-C) ask the run to stop at a checkpoint.

    `received` names the first signal ("SIGTERM" or "SIGINT"), else None. A
    second SIGINT ends the process at once (exit status 130) without a
    checkpoint, even in the middle of a long step: the signals are read by a
    thread from `signal.set_wakeup_fd`, since Python runs signal handlers only
    between bytecodes of the main thread. Only the main thread can install
    handlers; elsewhere (or with `enabled=False`) nothing is installed.

    >>> with StopSignals() as stop:
    ...     stop.received is None
    True
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled=True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received = None
        self._interrupts = 0

    def __enter__(self):
        if not self.enabled:
            return self
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        # A Python handler must be installed for the wakeup fd to be written to.
        self._previous = {s: signal.signal(s, lambda *_: None) for s in self.SIGNALS}
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="stop-signals")
        self._watcher.start()
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._writer.send(b"\0")  # not a signal number: tells the watcher to stop
        self._watcher.join()
        self._reader.close()
        self._writer.close()

    def _watch(self):
        while True:
            for number in self._reader.recv(64):
                if number == 0:
                    return
                self._on_signal(signal.Signals(number))

    def _on_signal(self, number):
        if number == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                print("\nSecond Ctrl-C: aborted without a checkpoint.", file=sys.stderr, flush=True)
                os._exit(130)
        if number in self.SIGNALS and self.received is None:
            self.received = number.name
            print(
                f"\n{number.name}: stopping after the current step with a checkpoint"
                + (
                    "; press Ctrl-C again to abort without one." if number == signal.SIGINT else "."
                ),
                file=sys.stderr,
                flush=True,
            )


class Trainer:
    """Trains and evaluates a Keras classifier with a custom loop under any strategy.

    Args:
        strategy: a `tf.distribute.Strategy` (see `make_strategy`).
        build_model: called inside `strategy.scope()`; returns a Keras model
            that maps images to class *logits*.
        build_optimizer: called inside `strategy.scope()`; returns a Keras
            optimizer (a `LossScaleOptimizer` for mixed precision).
        global_batch_size: examples per step over all replicas.
        model_dir: where checkpoints, logs and history go (`None`: nowhere).
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: how many checkpoints to keep.
        steps_per_loop: steps run inside one `tf.function` call (fewer host
            round trips on GPU/TPU; the progress bar and logs update per loop).
        jit_compile: compile the forward and backward pass with XLA.
        verbose: 1 shows progress on the chief (a bar in a terminal, plain
            lines elsewhere), 0 is silent.
        on_nonfinite: what a non-finite loss or gradient does: "stop" (raise
            `Diverged`) or "rollback" (back to the last checkpoint, see above).
        log_every: steps between the plain progress lines printed when stdout
            is not a terminal (every epoch gets one too).
        loss: "cross_entropy" (softmax) or "bce" (a sigmoid binary
            cross-entropy per class, averaged over the classes, as timm's
            `BinaryCrossEntropy`). Labels are class indices or, from mixup and
            cutmix, soft label rows.
        label_smoothing: targets become `(1 - s) * y + s / classes`.
        gradient_accumulation_steps: `k` splits each replica's batch into `k`
            micro-batches run one after the other; their gradients are summed
            and applied once, equal to the whole batch's (BatchNorm statistics
            aside) with a `k`-th of the activations in memory.
        ema_decay: keep a `WeightAverage` of the weights with this decay (0:
            none); `evaluate(..., averaged=True)` evaluates it, and `fit`
            evaluates both. Checkpoints hold it.

    Example:

    >>> import tempfile
    >>> from keras_preact import CIFARResNetV2, data, training
    >>> trainer = training.Trainer(
    ...     training.make_strategy("default"),  # or "mirrored", "multi_worker_mirrored", ...
    ...     lambda: CIFARResNetV2(8, width=4, classifier_activation=None),  # logits
    ...     lambda: training.CoupledSGD(training.cifar_schedule(32, 4)),
    ...     global_batch_size=32, model_dir=tempfile.mkdtemp(), verbose=0)
    >>> trainer.restore()  # 0, or the step of the latest checkpoint in <model_dir>/checkpoints
    0
    >>> def train_fn(ctx):
    ...     return data.make_dataset("digits", "train", batch_size=32, training=True,
    ...                              input_context=ctx, repeat=True)
    >>> def eval_fn(ctx):
    ...     return data.make_dataset("digits", "test", batch_size=32, input_context=ctx)
    >>> history = trainer.fit(train_fn, total_steps=4, steps_per_epoch=2, eval_dataset_fn=eval_fn)
    >>> bool(0 <= trainer.evaluate(eval_fn)["top1"] <= 1)
    True
    >>> trainer.close()

    where `train_fn(input_context)` returns a repeated `tf.data.Dataset` of
    `(images, labels)` batched per replica
    (`input_context.get_per_replica_batch_size(global_batch_size)`), e.g.
    `keras_preact.data.make_dataset(..., input_context=ctx, repeat=True)`, and
    `eval_fn` a finite one.
    """

    def __init__(
        self,
        strategy,
        build_model,
        build_optimizer,
        *,
        global_batch_size,
        model_dir=None,
        checkpoint_every=1000,
        keep_checkpoints=3,
        steps_per_loop=1,
        jit_compile=False,
        verbose=1,
        on_nonfinite="stop",
        log_every=100,
        loss="cross_entropy",
        label_smoothing=0.0,
        gradient_accumulation_steps=1,
        ema_decay=0.0,
    ):
        counts = (checkpoint_every, steps_per_loop, log_every, gradient_accumulation_steps)
        _check_settings(strategy, global_batch_size, counts, on_nonfinite)
        check_choice("loss", loss, LOSSES)
        self.loss = loss
        self.label_smoothing = float(label_smoothing)
        self.accumulation = gradient_accumulation_steps
        self.on_nonfinite = on_nonfinite
        self.log_every = log_every
        self.keep_checkpoints = keep_checkpoints
        self._rollbacks = 0  # in a row, since the last checkpoint saved
        self._restored = None  # the checkpoint the last restore() read
        self._saved_step = None  # the step of the latest checkpoint saved or restored
        self.in_cluster = task_info(strategy)[0] is not None
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.model_dir = model_dir
        self.checkpoint_every = checkpoint_every
        self.steps_per_loop = steps_per_loop
        self.verbose = verbose
        self.chief = is_chief(strategy)
        self._build(build_model, build_optimizer, ema_decay)
        self.history = []
        self.last_eval = None  # the latest evaluation in `fit`, with its step
        self._checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            **({"ema": self.ema} if self.ema is not None else {}),
        )
        self._manager, self._worker_dir = self._checkpoint_manager(keep_checkpoints)
        self.jit_compile = jit_compile
        self.trainable_variables_changed()
        self._eval_step = tf.function(self._eval_step_fn, reduce_retracing=True)
        self._finite_state = tf.function(self._finite_state_fn)
        self._sum_over_workers = tf.function(self._sum_over_workers_fn)
        self._writers = None
        self._tensorboard = True  # False when the tensorboard package is missing

    def _build(self, build_model, build_optimizer, ema_decay):
        """Creates the model, the optimizer's variables, the weight average and the step counter
        in the scope."""
        with self.strategy.scope():
            self.model = build_model()
            self.optimizer = build_optimizer()
            self.optimizer.build(self.model.trainable_variables)
            self.ema = WeightAverage(self.model, ema_decay) if ema_decay else None
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

    def _checkpoint_manager(self, keep_checkpoints):
        """`(manager, worker_dir)`, `(None, None)` without a model_dir; sets `checkpoint_dir`.

        The chief writes to `model_dir/checkpoints`; another worker to a
        temporary `worker_dir` of its own, deleted after each save.
        """
        if not self.model_dir:
            return None, None
        self.checkpoint_dir = os.path.join(self.model_dir, run_dir.CHECKPOINTS)
        write_dir, worker_dir = self.checkpoint_dir, None
        if not self.chief:
            _, task_id = task_info(self.strategy)
            worker_dir = tempfile.mkdtemp(prefix=f"keras_preact_worker{task_id}_")
            write_dir = worker_dir
        manager = tf.train.CheckpointManager(
            self._checkpoint, write_dir, max_to_keep=keep_checkpoints
        )
        return manager, worker_dir

    # ----------------------------------------------------------------- steps

    def trainable_variables_changed(self):
        """(Re)creates the step functions: call it after making layers (un)trainable.

        The optimizer must already hold slots for every variable that trains
        later (it is built on the model's trainable variables when made).
        """
        # XLA compiles the forward/backward pass only: optimizer.apply all-reduces
        # across replicas, which XLA cannot do inside a distributed step.
        self._grads_fn = self._loss_and_grads
        if self.jit_compile:
            self._grads_fn = tf.function(self._loss_and_grads, jit_compile=True)
        self._train_loop = tf.function(self._train_loop_fn)

    def _per_example_loss(self, labels, logits):
        """The loss of each example: `labels` are class indices or soft label rows."""
        if labels.shape.rank == 1 and not self.label_smoothing and self.loss == "cross_entropy":
            return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        targets = labels if labels.shape.rank == 2 else tf.one_hot(labels, tf.shape(logits)[-1])
        if self.label_smoothing:
            classes = tf.cast(tf.shape(logits)[-1], tf.float32)
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        if self.loss == "bce":
            return keras.losses.binary_crossentropy(targets, logits, from_logits=True)
        return keras.losses.categorical_crossentropy(targets, logits, from_logits=True)

    def _micro_batch(self, images, labels):
        """Loss (this micro-batch's share of the global batch's), correct count, gradients."""
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(self.model(images, training=True), tf.float32)
            per_example = self._per_example_loss(labels, logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            if self.model.losses:
                regularization = tf.add_n(self.model.losses) / self.accumulation
                loss += tf.nn.scale_regularization_loss(regularization)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        classes = labels if labels.shape.rank == 1 else tf.argmax(labels, -1, output_type=tf.int32)
        predicted = tf.argmax(logits, -1, output_type=tf.int32)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, classes), tf.float32))
        return loss, correct, grads

    def _loss_and_grads(self, images, labels):
        """The replica batch's loss, correct count and gradients, in `accumulation` micro-batches.

        The micro-batches run one after another in a `tf.while_loop`, so one
        micro-batch's activations are freed before the next one's forward
        pass; each loss is already its share of the global batch's mean, so
        the summed gradients are the whole batch's. (Keras' own
        `gradient_accumulation_steps` spreads a batch over `k` optimizer
        calls: `k` all-reduces, and the schedule counts micro-steps.)
        """
        k = self.accumulation
        if k == 1:
            return self._micro_batch(images, labels)
        images = tf.reshape(images, [k, -1, *images.shape[1:]])
        labels = tf.reshape(labels, [k, -1, *labels.shape[1:]])
        zeros = [tf.zeros_like(v) for v in self.model.trainable_variables]

        def body(i, loss, correct, grads):
            part_loss, part_correct, part = self._micro_batch(images[i], labels[i])
            part = [
                tf.zeros_like(z) if g is None else tf.convert_to_tensor(g)
                for g, z in zip(part, zeros)
            ]
            return (
                i + 1,
                loss + part_loss,
                correct + part_correct,
                [a + b for a, b in zip(grads, part)],
            )

        _, loss, correct, grads = tf.while_loop(
            lambda i, *_: i < k, body, (tf.constant(0), 0.0, 0.0, zeros)
        )
        return loss, correct, grads

    def _train_step(self, images, labels, stop):
        if labels.shape.rank == 1:
            labels = tf.cast(labels, tf.int32)
        loss, correct, grads = self._grads_fn(images, labels)
        nonfinite = self._nonfinite(loss, grads)
        self.optimizer.apply(grads, self.model.trainable_variables)
        if self.ema is not None:
            self.ema.update()
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        return tf.stack([loss, correct, count, stop, nonfinite])

    def _nonfinite(self, loss, grads):
        """1.0 when this replica's loss or one of its gradients is NaN or inf, else 0.0.

        A `LossScaleOptimizer` skips steps with non-finite (scaled) gradients
        itself, lowering its scale: there only the loss counts.
        """
        checks = [tf.math.is_finite(loss)]
        if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            checks += [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
        return 1.0 - tf.cast(tf.reduce_all(tf.stack(checks)), tf.float32)

    def _train_loop_fn(self, iterator, num_steps, stop):
        """Runs up to `num_steps` steps; returns the sums of loss, correct, examples, stop
        requests and non-finite flags.

        `stop` (1.0 when this worker received a stop signal) rides along with
        the step's all-reduce, so every worker learns of a signal that any of
        them received at the same step. So does each replica's non-finite flag:
        every worker ends the call after the step where any replica saw one.
        """
        totals = tf.zeros([5])
        for _ in tf.range(num_steps):
            per_replica = self.strategy.run(self._train_step, args=(*next(iterator), stop))
            reduced = self.strategy.reduce("SUM", per_replica, axis=None)
            totals += reduced
            self.step.assign_add(1)
            if reduced[4] > 0:
                break
        return totals

    def _finite_state_fn(self):
        """Whether every float variable of the model and the optimizer is finite."""
        checks = [
            tf.reduce_all(tf.math.is_finite(v.value))
            for v in [*self.model.weights, *self.optimizer.variables]
            if tf.as_dtype(v.dtype).is_floating
        ]
        return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)

    def _sum_over_workers_fn(self, value):
        """`value` (a float on each worker) summed over the cluster's replicas."""
        per_replica = self.strategy.run(tf.identity, args=(value,))
        return self.strategy.reduce("SUM", per_replica, axis=None)

    def _eval_logits(self, images, views):
        """The model's logits; with `views`, images `[batch, views, h, w, c]` of test-time
        views: the log of the softmax outputs averaged over the views."""
        if not views:
            return tf.cast(self.model(images, training=False), tf.float32)
        shape = tf.shape(images)
        flat = tf.reshape(images, tf.concat([[-1], shape[2:]], axis=0))
        views = shape[1]
        logits = tf.cast(self.model(flat, training=False), tf.float32)
        probabilities = tf.nn.softmax(tf.reshape(logits, [-1, views, logits.shape[-1]]))
        return tf.math.log(tf.reduce_mean(probabilities, axis=1) + 1e-12)

    def _eval_step_fn(self, batch, views=False):
        def sums(images, labels):
            logits = self._eval_logits(images, views)
            loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            _, top = tf.math.top_k(logits, k=min(5, logits.shape[-1]))
            hits = tf.cast(tf.equal(top, labels[:, None]), tf.float32)
            return tf.stack(
                [
                    tf.reduce_sum(loss),
                    tf.reduce_sum(hits[:, 0]),
                    tf.reduce_sum(hits),
                    tf.cast(tf.shape(labels)[0], tf.float32),
                ]
            )

        def step(images, labels):
            # A replica gets an empty batch at the end of an uneven split; skip the
            # model there (oneDNN's CPU conv returns a wrong shape for batch 0).
            labels = tf.cast(labels, tf.int32)
            return tf.cond(
                tf.shape(labels)[0] > 0, lambda: sums(images, labels), lambda: tf.zeros([4])
            )

        return self.strategy.reduce("SUM", self.strategy.run(step, args=batch), axis=None)

    # ------------------------------------------------------------ public API

    @property
    def current_step(self):
        """The number of training steps done (restored ones included)."""
        return int(self.step.numpy())

    def learning_rate(self):
        """The learning rate the next step will use."""
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    def restore(self):
        """Restores the newest readable checkpoint in `model_dir/checkpoints`; returns its step
        (0 if none).

        Unreadable checkpoints (cut short by a crash or a full disk) are set
        aside in `checkpoints/unreadable/` by the chief, and one line on stderr
        names them and the checkpoint resumed from. A readable checkpoint of
        another model or optimizer raises ValueError; an error of the storage
        or the machine (`checkpoint_files.TRANSIENT_ERRORS`, e.g. gs://
        unavailable) is raised as it is, and nothing is set aside.
        """
        if not self.model_dir:
            return 0
        unreadable, restored = [], None
        for prefix in checkpoint_files.checkpoints_newest_first(self.checkpoint_dir):
            try:
                self._checkpoint.restore(prefix).assert_existing_objects_matched()
            except checkpoint_files.TRANSIENT_ERRORS:
                raise  # the storage or the machine, not the checkpoint: nothing is set aside
            except Exception as e:  # unreadable (any error type), or another model's
                reason = checkpoint_files.unreadable_reason(prefix)
                if reason is None:
                    raise ValueError(
                        f"Cannot resume from {prefix}: it does not match this model/optimizer "
                        f"({e}). Use a new --model_dir, or the flags of the run that wrote it."
                    ) from None
                unreadable.append((prefix, reason))
                continue
            restored = prefix
            break
        if unreadable:
            self._set_aside(unreadable, restored)
        self._restored = restored
        if restored is None:
            return 0
        step = self.current_step
        self._saved_step = step
        self.history = [row for row in self._read_history() if int(row["step"]) <= step]
        return step

    def _set_aside(self, unreadable, restored):
        """The chief moves unreadable checkpoints aside, rewrites the state file and says so."""
        if not self.chief:
            return
        prefixes = checkpoint_files.checkpoints_newest_first(self.checkpoint_dir)
        folder = None
        for prefix, _ in unreadable:
            folder = checkpoint_files.set_aside(prefix, self.checkpoint_dir)
        bad = {prefix for prefix, _ in unreadable}
        checkpoint_files.keep_only(self.checkpoint_dir, [p for p in prefixes[::-1] if p not in bad])
        self._manager, _ = self._checkpoint_manager(self.keep_checkpoints)
        names = "; ".join(f"{os.path.basename(p)} ({reason})" for p, reason in unreadable)
        then = (
            f"resuming from {os.path.basename(restored)}, the newest readable one"
            if restored
            else "no readable checkpoint is left, so training starts from step 0"
        )
        print(
            f"Unreadable checkpoint {names}: set aside in {folder}; {then}.",
            file=sys.stderr,
            flush=True,
        )

    def save_checkpoint(self):
        """Saves a checkpoint at the current step (every worker must call it); returns its path.

        Raises `Diverged` rather than save non-finite weights, and
        `keras_preact.files.DiskFullError` (on every worker of a cluster) when
        the checkpoint did not fit: its partial files are removed first.
        """
        if self._manager is None:
            return None
        step = self.current_step
        if step == self._saved_step:  # saved (or restored) at this step already
            return os.path.join(self.checkpoint_dir, f"ckpt-{step}")
        if not bool(self._finite_state()):
            raise Diverged(self._diverged_message(step, WEIGHTS_NOT_FINITE, None), step)
        error, path = None, None
        try:
            path = self._manager.save(checkpoint_number=step)
        except Exception as e:
            if not files.is_disk_full(e):
                raise
            error = e
        finally:
            if self._worker_dir is not None and tf.io.gfile.exists(self._worker_dir):
                tf.io.gfile.rmtree(self._worker_dir)
        failed = error is not None
        if self.in_cluster:  # every worker stops if one of them could not save
            failed = float(self._sum_over_workers(tf.constant(float(failed)))) > 0
        if failed:
            raise self._checkpoint_disk_full(step, error)
        self._saved_step, self._rollbacks = step, 0
        return path

    def _checkpoint_disk_full(self, step, error):
        """The `DiskFullError` of a checkpoint that did not fit (here, or on another worker).

        Only a worker whose own save failed removes its partial files: where the
        save worked (the chief, when another worker's disk is full) the checkpoint
        is whole and recorded, and it stays.
        """
        name = f"ckpt-{step}"
        prefix = os.path.join(self.checkpoint_dir, name)
        if error is None:
            return files.DiskFullError(
                f"Another worker's disk is full: the checkpoint {name} could not be saved there. "
                + self._resume_hint(),
                prefix,
            )
        checkpoint_files.remove_partial_save(self._manager.directory, step)
        message = files.disk_full_message(
            prefix, self._checkpoint_bytes(), what=f"the checkpoint {name}"
        )
        return files.DiskFullError(
            f"{message} Its partial files were removed. {self._resume_hint()}", prefix
        )

    def _checkpoint_bytes(self):
        """About how many bytes a checkpoint takes: the variables it holds."""
        variables = [*self.model.weights, *self.optimizer.variables]
        return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in variables)

    def _resume_hint(self):
        """What a rerun resumes from, after a fault: the newest checkpoint, checked to read back."""
        latest = tf.train.latest_checkpoint(self.checkpoint_dir) if self.model_dir else None
        if latest is None:
            return "No checkpoint was saved before: free space and run the same command again."
        step = checkpoint_files.checkpoint_step(latest)
        reason = checkpoint_files.unreadable_reason(latest)
        intact = "reads back whole" if reason is None else f"cannot be read ({reason})"
        return (
            f"The newest checkpoint, {os.path.basename(latest)} (step {step}), {intact}: free "
            f"space and run the same command again to resume from step {step}."
        )

    def fit(
        self,
        train_dataset_fn,
        *,
        total_steps,
        steps_per_epoch,
        eval_dataset_fn=None,
        eval_every=1,
        on_epoch_end=None,
    ):
        """Trains until `total_steps` steps are done (from the restored step); returns the history.

        `train_dataset_fn(input_context)` returns a repeated per-replica-batched
        dataset; `eval_dataset_fn` (optional) a finite one, evaluated every
        `eval_every` epochs (0: never) and after the last step. An epoch is
        `steps_per_epoch` steps (epoch `e` ends at step `(e + 1) * steps_per_epoch`).
        `on_epoch_end(row)` (optional) is called on every worker with each
        epoch's history row, after its progress bar and eval lines are printed.

        With a `model_dir`, SIGTERM or Ctrl-C (on any worker) stops every worker
        after the current step with a checkpoint there, and raises `Preempted`;
        a second Ctrl-C aborts at once (see `StopSignals`).
        """
        if total_steps < 1 or steps_per_epoch < 1:
            raise ValueError("total_steps and steps_per_epoch must be >= 1.")
        step = self.current_step
        if step >= total_steps:
            return self.history
        with StopSignals(enabled=self._manager is not None) as stop:
            epochs = _Epochs(total_steps, steps_per_epoch, eval_dataset_fn, eval_every)
            return self._fit(train_dataset_fn, epochs, stop, on_epoch_end)

    def _fit(self, train_dataset_fn, epochs, stop, on_epoch_end):
        step = self.current_step
        iterator = iter(self.strategy.distribute_datasets_from_function(train_dataset_fn))
        while step < epochs.total_steps:
            epoch = epochs.at(step)[0]
            try:
                row = self._train_epoch(iterator, epochs, step, stop)
            except _NonFinite as event:
                step = self._roll_back(event)  # or raises Diverged
                continue
            step = row["step"]
            if epochs.evaluates(epoch, step):
                row.update(self._evaluate_epoch(epochs.eval_dataset_fn, step))
            self.history.append(row)
            self._write_history()
            if on_epoch_end is not None:
                on_epoch_end(row)
        self.save_checkpoint()
        return self.history

    def _check_weights(self, step, learning_rate):
        """Weights that became non-finite while the loss and gradients stayed finite (an
        update that overflowed) stop the run (`Diverged`) or, with `on_nonfinite="rollback"`,
        roll it back like a non-finite loss (raises `_NonFinite`). Checked before each
        checkpoint and after the last step, before its evaluation."""
        if step == self._saved_step or bool(self._finite_state()):
            return
        if self.on_nonfinite == "rollback":
            raise _NonFinite(step, None, learning_rate, what=WEIGHTS_NOT_FINITE)
        raise Diverged(self._diverged_message(step, WEIGHTS_NOT_FINITE, learning_rate), step)

    def _train_epoch(self, iterator, epochs, step, stop):
        """Trains from `step` to the end of its epoch (checkpoints, logs, progress); its row.

        Stops every worker with `Preempted` when one of them received a stop
        signal; raises `_NonFinite` after a step with a non-finite loss or gradient.
        """
        epoch, epoch_start, epoch_end = epochs.at(step)
        progress = self._progress(epochs, step)
        start, start_step = time.time(), step
        totals = np.zeros(3)
        try:
            while step < epoch_end:
                out, lr = self._run_steps(iterator, step, epoch_end, stop)
                done = self.current_step - step
                step += done
                totals += out[:3]
                if out[4] > 0 or not np.isfinite(out[0]):
                    raise _NonFinite(step, out[0] / done, lr)
                means = {"loss": out[0] / done, "accuracy": out[1] / out[2]}
                self._log("train", step, **means, learning_rate=lr)
                if progress is not None:
                    progress.update(step, totals, lr)
                last = step >= epochs.total_steps
                if last or step % self.checkpoint_every == 0:
                    self._check_weights(step, lr)
                    if not last:  # the last checkpoint follows the last evaluation
                        self.save_checkpoint()
                if out[3] > 0 and step < epochs.total_steps:  # a stop signal, here or elsewhere
                    self._stop(step, stop.received, progress)
        except BaseException:
            if progress is not None:
                progress.interrupt()  # a message follows on a line of its own
            raise
        row = {
            "epoch": epoch + 1,
            "step": step,
            "learning_rate": lr,
            "loss": totals[0] / (step - start_step),
            "accuracy": totals[1] / totals[2],
            "seconds": time.time() - start,
        }
        if progress is not None:
            progress.end(row)
        return row

    def _run_steps(self, iterator, step, epoch_end, stop):
        """One `tf.function` call: up to the epoch's end, the next checkpoint, `steps_per_loop`.

        Returns its sums (loss, correct, examples, stop requests, non-finite
        flags) and the learning rate its first step used.
        """
        next_checkpoint = (step // self.checkpoint_every + 1) * self.checkpoint_every
        n = min(self.steps_per_loop, epoch_end - step, next_checkpoint - step)
        lr = self.learning_rate()
        stop_requested = tf.constant(float(stop.received is not None))
        out = self._train_loop(iterator, tf.constant(n, tf.int64), stop_requested).numpy()
        return out, lr

    def _progress(self, epochs, step):
        """The epoch's `EpochProgress` on a verbose chief (bar or plain lines); else None."""
        if not (self.chief and self.verbose):
            return None
        epoch, epoch_start, epoch_end = epochs.at(step)
        return EpochProgress(
            epoch,
            epochs.count,
            (epoch_start, epoch_end),
            epochs.total_steps,
            global_batch=self.global_batch_size,
            log_every=self.log_every,
            first_step=step,
        )

    def _roll_back(self, event):
        """After a non-finite step: back to the last checkpoint (returns its step), or `Diverged`."""
        if event.what:
            what = event.what
        elif np.isfinite(event.loss):
            what = f"a gradient was not finite (at a loss of {event.loss:.4g})"
        else:
            what = f"the loss was {'nan' if np.isnan(event.loss) else 'inf'}"
        latest = tf.train.latest_checkpoint(self.checkpoint_dir) if self.model_dir else None
        if self.on_nonfinite != "rollback" or latest is None or self._rollbacks >= MAX_ROLLBACKS:
            situation = ""
            if self.on_nonfinite == "rollback":
                situation = (
                    ", with no checkpoint to roll back to"
                    if latest is None
                    else f", after {self._rollbacks} rollbacks in a row"
                )
            message = self._diverged_message(event.step, what, event.learning_rate, situation)
            raise Diverged(message, event.step)
        self._rollbacks += 1
        step = self.restore()
        if self._restored is None:  # every checkpoint turned out unreadable (set aside)
            situation = ", and no checkpoint could be read to roll back to"
            message = self._diverged_message(event.step, what, event.learning_rate, situation)
            raise Diverged(message, event.step)
        if self.chief:
            print(
                f"At step {event.step} {what} at learning rate {event.learning_rate:.4g}: rolled "
                f"back to step {step} ({os.path.basename(self._restored)}); the {event.step - step} "
                f"batches since then are skipped (rollback {self._rollbacks} of at most "
                f"{MAX_ROLLBACKS} in a row).",
                file=sys.stderr,
                flush=True,
            )
        return step

    def _diverged_message(self, step, what, learning_rate, situation=""):
        """One line: what became non-finite at `step` (and at what learning rate), what was kept,
        what to do."""
        lr = "" if learning_rate is None else f" at learning rate {learning_rate:.4g}"
        latest = tf.train.latest_checkpoint(self.checkpoint_dir) if self.model_dir else None
        if latest is None:
            kept = "nothing was saved (no checkpoint yet)"
        else:
            kept = (
                f"nothing from after step {checkpoint_files.checkpoint_step(latest)} was saved "
                f"and every checkpoint holds finite weights, the newest being "
                f"{os.path.basename(latest)}"
            )
        advice = "Lower learning_rate"
        if self.on_nonfinite != "rollback":
            advice += (
                ", or rerun with on_nonfinite=rollback to go back to the last checkpoint and "
                "skip the batches since"
            )
        return f"Training diverged at step {step}: {what}{lr}{situation}; {kept}. {advice}."

    def _evaluate_epoch(self, dataset_fn, step):
        """Evaluates after the epoch that ended at `step` (logs, prints); the row's val_* fields.

        With a weight average, both: `val_*` (the weights) and `val_*_ema`.
        """
        row = {}
        for averaged in (False, True) if self.ema is not None else (False,):
            metrics = self.evaluate(dataset_fn, averaged=averaged)
            suffix = "_ema" if averaged else ""
            if averaged or self.ema is None:
                self.last_eval = dict(metrics, step=step)  # what the saved model will be
            self._log(
                f"eval{suffix}",
                step,
                loss=metrics["loss"],
                top1=metrics["top1"],
                top5=metrics["top5"],
            )
            if self.chief and self.verbose:
                print(
                    f"  eval{' (EMA)' if averaged else ''}: loss {metrics['loss']:.4f}, "
                    f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}"
                )
            row.update({f"val_{k}{suffix}": metrics[k] for k in ("loss", "top1", "top5")})
        return row

    def _stop(self, step, signal_name, progress):
        """Checkpoints the current step on every worker and raises `Preempted`."""
        preempted = Preempted(step, self.save_checkpoint(), signal_name)
        self.close()
        if self.chief:
            if progress is not None:
                progress.interrupt()  # end the progress bar's line
            print(preempted, file=sys.stderr, flush=True)
        raise preempted

    def evaluate(self, dataset_fn, averaged=False, views=False):
        """Returns `{"loss", "top1", "top5", "count"}` over a finite dataset (exact, all replicas).

        `averaged=True` evaluates the weight average (`ema_decay`) instead of
        the weights. `views=True`: the images are `[batch, views, h, w, c]`,
        test-time views (`make_dataset(..., tta=...)`); the prediction is the
        mean softmax over the views.
        """
        if averaged and self.ema is None:
            raise ValueError("averaged=True needs a Trainer made with ema_decay.")
        dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
        totals = np.zeros(4)
        with self.ema.swapped() if averaged else contextlib.nullcontext():
            for batch in dataset:
                totals += self._eval_step(batch, views).numpy()
        count = totals[3]
        if count == 0:
            raise ValueError("The evaluation dataset is empty.")
        return {
            "loss": totals[0] / count,
            "top1": totals[1] / count,
            "top5": totals[2] / count,
            "count": int(count),
        }

    def close(self):
        """Flushes the logs and removes a non-chief worker's temporary checkpoint directory."""
        try:
            with self._resumable(), self._writing_logs():
                for writer in (self._writers or {}).values():
                    writer.close()
        finally:
            if self._worker_dir is not None and tf.io.gfile.exists(self._worker_dir):
                tf.io.gfile.rmtree(self._worker_dir)

    @contextlib.contextmanager
    def _resumable(self):
        """A full disk in the block: its `DiskFullError` also says from where a rerun resumes."""
        try:
            yield
        except files.DiskFullError as e:
            raise files.DiskFullError(f"{e} {self._resume_hint()}", e.filename) from None

    def _writing_logs(self):
        """A full disk while TensorBoard logs are written raises `DiskFullError` naming them."""
        folder = os.path.join(self.model_dir or "", run_dir.LOGS)
        return files.disk_full_as_error(folder, what="the TensorBoard logs")

    # --------------------------------------------------------------- logging

    def _log(self, name, step, **scalars):
        if not (self.chief and self.model_dir):
            return
        if self._writers is None:
            self._writers = {}
            if importlib.util.find_spec("tensorboard") is None:
                self._tensorboard = False
                logging.warning("tensorboard is not installed: no TensorBoard logs are written.")
        if not self._tensorboard:
            return
        with self._resumable(), self._writing_logs():
            if name not in self._writers:
                self._writers[name] = tf.summary.create_file_writer(
                    os.path.join(self.model_dir, run_dir.LOGS, name)
                )
            with self._writers[name].as_default(step=step):
                for key, value in scalars.items():
                    tf.summary.scalar(key, float(value))

    def _read_history(self):
        path = os.path.join(self.model_dir, run_dir.HISTORY_JSON)
        if not tf.io.gfile.exists(path):
            return []
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)

    def _write_history(self):
        if not (self.chief and self.model_dir):
            return
        fields = HISTORY_FIELDS + (EMA_HISTORY_FIELDS if self.ema is not None else ())
        rows = [{k: _plain(row.get(k)) for k in fields} for row in self.history]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with self._resumable():
            run_dir.write_json(os.path.join(self.model_dir, run_dir.HISTORY_JSON), rows)
            run_dir.atomic_write(
                os.path.join(self.model_dir, run_dir.HISTORY_CSV), buffer.getvalue()
            )


def _check_settings(strategy, global_batch_size, counts, on_nonfinite):
    """Raises ValueError for a batch the replicas cannot share, a count below 1 (checkpoint_every,
    steps_per_loop, log_every) or an unknown `on_nonfinite`."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"Global batch size {global_batch_size} is not divisible by the "
            f"{replicas} replicas of the strategy; use a multiple of {replicas}."
        )
    if min(counts) < 1:
        raise ValueError("checkpoint_every, steps_per_loop and log_every must be >= 1.")
    if on_nonfinite not in NONFINITE_ACTIONS:
        raise ValueError(
            f"Unknown on_nonfinite {on_nonfinite!r}. Allowed values: "
            f"{', '.join(map(repr, NONFINITE_ACTIONS))}."
        )


@dataclasses.dataclass(frozen=True)
class _Epochs:
    """How `fit` cuts `total_steps` into epochs, and after which epochs it evaluates."""

    total_steps: int
    steps_per_epoch: int
    eval_dataset_fn: object
    eval_every: int

    @property
    def count(self):
        return -(-self.total_steps // self.steps_per_epoch)

    def at(self, step):
        """(epoch index, its first step, its end step) of the epoch that `step` is in."""
        epoch = step // self.steps_per_epoch
        start = epoch * self.steps_per_epoch
        return epoch, start, min(start + self.steps_per_epoch, self.total_steps)

    def evaluates(self, epoch, step):
        """Whether to evaluate after `epoch` (ended at `step`): every eval_every, and at the end."""
        if self.eval_dataset_fn is None:
            return False
        due = self.eval_every and (epoch + 1) % self.eval_every == 0
        return bool(due or step == self.total_steps)


def _plain(value):
    """A JSON-friendly Python scalar."""
    if value is None:
        return None
    if isinstance(value, (np.integer, int)):
        return int(value)
    return float(value)
