"""How much faster is batch-1 inference with the exported TFLite files than with the Keras model?

Builds a keras-preact model (weights random: latency does not depend on their
values), converts it with `keras_preact.export.tflite` to float32, float16, dynamic-range
int8 and full-integer int8 (calibrated on the sample photos that scikit-learn
and scikit-image ship), and times single-image inference in one run, the
contenders alternating for `--rounds` rounds:

* the peer: the Keras model called through a `tf.function` (what an in-process
  TensorFlow service would run);
* each TFLite file in `ai_edge_litert`'s interpreter with `--threads` threads.

Prints the median latency of the best round for each and its ratio to Keras
(> 1 means faster than Keras). Run from the repository root:

    python benchmarks/tflite_latency.py --model=ResNet18V2 --crop_size=224 --threads=2
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_preact  # noqa: E402
from keras_preact.export import tflite as tflite_lib  # noqa: E402
from keras_preact.export import verify as verify_lib  # noqa: E402

flags.DEFINE_string("model", "ResNet18V2", "keras-preact builder name")
flags.DEFINE_integer("crop_size", 224, "input size")
flags.DEFINE_integer("threads", 2, "TFLite interpreter threads (TF uses all cores)")
flags.DEFINE_integer("runs", 20, "timed calls per round")
flags.DEFINE_integer("rounds", 3, "alternating rounds")
flags.DEFINE_list("variants", list(tflite_lib.VARIANTS), "TFLite variants to time")
FLAGS = flags.FLAGS


def _median_ms(call, image, runs):
    call(image)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def main(argv):
    del argv
    model = getattr(keras_preact, FLAGS.model)(weights=None, input_shape=(None, None, 3))
    crops = verify_lib.eval_crops(verify_lib.sample_images(), FLAGS.crop_size)
    print(f"{FLAGS.model} at {FLAGS.crop_size}: converting {', '.join(FLAGS.variants)} ...")
    converted = tflite_lib.convert_all(model, FLAGS.variants, FLAGS.crop_size, crops)
    runners = {
        v: tflite_lib.TFLiteRunner(data, num_threads=FLAGS.threads) for v, data in converted.items()
    }
    keras_fn = tf.function(lambda x: model(x, training=False))
    contenders = {"keras (tf.function)": lambda image: keras_fn(image[None]).numpy()}
    contenders.update({f"tflite {v}": r.invoke for v, r in runners.items()})
    best = {name: float("inf") for name in contenders}
    for _ in range(FLAGS.rounds):
        for name, call in contenders.items():
            best[name] = min(best[name], _median_ms(call, crops[0], FLAGS.runs))
    peer = best["keras (tf.function)"]
    print(f"{'':24} {'batch-1 ms':>10} {'size MB':>8} {'vs keras':>9}")
    for name, ms in best.items():
        variant = name.split()[-1]
        size = len(converted[variant]) / 1e6 if variant in converted else float("nan")
        print(f"{name:24} {ms:10.2f} {size:8.2f} {peer / ms:8.2f}x")


if __name__ == "__main__":
    app.run(main)
