"""Does the custom training loop cost speed? `Trainer` against Keras `Model.fit`, same work.

Both train the same pre-activation ResNet (logits, from_logits cross-entropy,
`CoupledSGD`) on the same in-memory batches under the default strategy, after
a warm-up that absorbs tracing. Prints images/s of each and the ratio
(Trainer / fit; 1.0 = no cost).

    python benchmarks/training_step.py --depth=20 --batch_size=128 --steps=30
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_preact import CIFARResNetV2, training  # noqa: E402

flags.DEFINE_integer("depth", 20, "CIFAR ResNet depth.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 30, "Timed steps (after as many warm-up steps).")
FLAGS = flags.FLAGS


def _data(steps, batch):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * 4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch * 4).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()


def _model():
    keras.utils.set_random_seed(0)
    return CIFARResNetV2(FLAGS.depth, classifier_activation=None)


def time_trainer(steps, batch):
    trainer = training.Trainer(
        tf.distribute.get_strategy(),
        _model,
        lambda: training.CoupledSGD(0.01),
        global_batch_size=batch,
        steps_per_loop=1,
        verbose=0,
    )
    fn = lambda ctx: _data(steps, batch)  # noqa: E731
    trainer.fit(fn, total_steps=steps, steps_per_epoch=steps)  # warm-up
    start = time.perf_counter()
    trainer.fit(fn, total_steps=2 * steps, steps_per_epoch=steps)
    return steps * batch / (time.perf_counter() - start)


def time_fit(steps, batch):
    model = _model()
    model.compile(
        optimizer=training.CoupledSGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    data = _data(steps, batch)
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)  # warm-up
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def main(argv):
    del argv
    # Alternate the two, three times each, and keep each one's best (the machine is shared).
    fit, loop = 0.0, 0.0
    for _ in range(3):
        fit = max(fit, time_fit(FLAGS.steps, FLAGS.batch_size))
        loop = max(loop, time_trainer(FLAGS.steps, FLAGS.batch_size))
    print(f"ResNet-{FLAGS.depth}, batch {FLAGS.batch_size}, {FLAGS.steps} steps:")
    print(f"  Keras fit: {fit:.1f} img/s")
    print(f"  Trainer:   {loop:.1f} img/s")
    print(f"  ratio Trainer / fit: {loop / fit:.2f}")


if __name__ == "__main__":
    app.run(main)
