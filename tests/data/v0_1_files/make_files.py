"""Writes the files keras-preact 0.1.0 (before the model class) saved, for the loading tests.

Run once with that version's code; kept beside the files as a record of how they were made.
"""

import json
import os
import sys

import keras
import numpy as np

import keras_preact

out = sys.argv[1]
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
np.save(os.path.join(out, "inputs.npy"), x)


def randomize(model):
    # Every weight random, BN statistics included, so a wrong mapping shows.
    values = []
    for w in model.get_weights():
        v = rng.normal(0, 0.1, w.shape).astype(w.dtype)
        values.append(v)
    model.set_weights(values)
    for layer in model.layers:
        if layer.name == "preprocessing":
            layer.set_weights(
                [
                    np.array([120.0, 110.0, 100.0], "float32"),
                    np.array([60.0, 61.0, 62.0], "float32"),
                ]
            )
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(
                rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype("float32")
            )


nets = {
    "cifar8_full_preact": dict(depth=8, unit="basic", width=4, classes=3),
    "cifar11_relu_only_preact_gating": dict(
        depth=11,
        unit="bottleneck",
        width=4,
        classes=3,
        unit_variant="relu_only_preact",
        shortcut="exclusive_gating",
        gate_bias_init=-2.0,
    ),
    "cifar8_original_conv1x1": dict(
        depth=8, unit="basic", width=4, classes=3, unit_variant="original", shortcut="conv1x1"
    ),
}
for name, kwargs in nets.items():
    model = keras_preact.CIFARResNetV2(**kwargs)
    randomize(model)
    if name == "cifar8_full_preact":
        model.get_layer("preprocessing").eval_preprocessing = {
            "weights": "timm:resnetv2_50.a1h_in1k",
            "normalization": "tf",
            "interpolation": "bicubic",
            "crop_fraction": 0.95,
            "image_size": 224,
        }
    model.save(os.path.join(out, name + ".keras"))
    model.save_weights(os.path.join(out, name + ".weights.h5"))
    np.save(os.path.join(out, name + ".outputs.npy"), np.asarray(model(x, training=False)))
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(kwargs, f, indent=1)
print("done")
