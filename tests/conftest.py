"""Shared test setup: quiet TensorFlow, seeded randomness, small shared fixtures."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _randomize_batchnorm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0.0, 0.2, beta.shape),
                    rng.normal(0.0, 0.2, mean.shape),
                    rng.uniform(0.5, 2.0, var.shape),
                ]
            )
    return model


@pytest.fixture
def randomize_batchnorm():
    """Gives every BatchNormalization random gamma/beta/moving stats, so checks can fail."""
    return _randomize_batchnorm
