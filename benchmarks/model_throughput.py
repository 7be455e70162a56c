"""Is a keras-preact ResNet50V2 as fast as keras.applications' ResNet50V2?

Measures training and inference images/s of keras_preact.ResNet50V2 (paper and
keras layouts) and of the peer, keras.applications.ResNet50V2, in one run on
the same inputs, and prints the ratios (ours / peer; > 1 means faster).

    python benchmarks/model_throughput.py --batch_size 16 --steps 5
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_preact  # noqa: E402

flags.DEFINE_integer("batch_size", 16, "images per step")
flags.DEFINE_integer("image_size", 224, "input height and width")
flags.DEFINE_integer("steps", 5, "timed steps after 2 warm-up steps")
flags.DEFINE_integer("rounds", 2, "interleaved measurement rounds; the best of each is kept")


def _rate(fn, batch, steps):
    for _ in range(2):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch * steps / (time.perf_counter() - start)


def measure(model, images, labels, steps, preprocess=None):
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    inputs = preprocess(images) if preprocess else images

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(inputs, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    @tf.function
    def infer_step():
        return model(inputs, training=False)

    batch = images.shape[0]
    return _rate(train_step, batch, steps), _rate(infer_step, batch, steps)


def main(_):
    f = flags.FLAGS
    rng = np.random.default_rng(0)
    images = tf.constant(
        rng.uniform(0, 255, (f.batch_size, f.image_size, f.image_size, 3)).astype("float32")
    )
    labels = tf.constant(rng.integers(0, 1000, f.batch_size))
    candidates = {
        "peer keras.applications.ResNet50V2": (
            keras.applications.ResNet50V2(weights=None),
            keras.applications.resnet_v2.preprocess_input,
        ),
        "keras_preact.ResNet50V2(layout='paper')": (keras_preact.ResNet50V2(layout="paper"), None),
        "keras_preact.ResNet50V2(layout='keras')": (keras_preact.ResNet50V2(layout="keras"), None),
    }
    # Interleaved rounds, best of each: the machine's load drifts during a run.
    best = {name: (0.0, 0.0) for name in candidates}
    for _ in range(f.rounds):
        for name, (model, preprocess) in candidates.items():
            train, infer = measure(model, images, labels, f.steps, preprocess)
            best[name] = (max(best[name][0], train), max(best[name][1], infer))
    peer_train, peer_infer = next(iter(best.values()))
    for name, (train, infer) in best.items():
        print(
            f"{name}: train {train:.2f} img/s (ratio {train / peer_train:.2f}), "
            f"infer {infer:.2f} img/s (ratio {infer / peer_infer:.2f})"
        )


if __name__ == "__main__":
    app.run(main)
