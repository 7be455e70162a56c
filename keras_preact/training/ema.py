"""An exponential moving average of a model's weights (`--ema_decay`), as timm's `ModelEmaV3`.

After every optimizer step, for every float weight of the model (kernels,
biases, norm parameters and the BatchNorm moving statistics alike):

    average = decay * average + (1 - decay) * weight

The averages start as the weights when the `WeightAverage` is made (before a
checkpoint is restored, which then restores them too).

`keras.optimizers.Optimizer(use_ema=True)` does not serve: it averages only
the trainable variables, so the averaged model would normalise with the raw
model's BatchNorm statistics, and it keeps the averages inside the optimizer,
where evaluation and saving cannot reach them without overwriting the weights.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


class WeightAverage(tf.Module):
    """The moving average of `model`'s float weights; create it in the strategy's scope.

    `update()` (in a replica or cross-replica context: under `strategy.run` the
    first replica's values are kept) moves the averages; `swapped()` puts them
    in the model for a `with` block (evaluation, saving) and the weights back
    after it. A `tf.train.Checkpoint` holding it saves and restores the averages.

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input([1]), keras.layers.Dense(1, use_bias=False)])
    >>> model.set_weights([np.array([[1.0]])])
    >>> average = WeightAverage(model, decay=0.9)
    >>> model.set_weights([np.array([[2.0]])])
    >>> average.update()
    >>> with average.swapped():
    ...     round(float(model.weights[0].numpy()[0, 0]), 6)  # 0.9 * 1 + 0.1 * 2
    1.1
    >>> float(model.weights[0].numpy()[0, 0])  # the weights are back
    2.0
    """

    def __init__(self, model, decay):
        super().__init__(name="weight_average")
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}.")
        self.decay = float(decay)
        self._weights = [w for w in model.weights if tf.as_dtype(w.dtype).is_floating]
        self.averages = [
            tf.Variable(
                w.value,
                trainable=False,
                name=w.path.replace("/", "_"),
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            for w in self._weights
        ]

    def update(self):
        """One step of the average: `average = decay * average + (1 - decay) * weight`."""
        for average, weight in zip(self.averages, self._weights):
            value = tf.cast(weight.value, average.dtype)
            average.assign(self.decay * average + (1.0 - self.decay) * value)

    @tf.function
    def _swap(self):
        for average, weight in zip(self.averages, self._weights):
            value = tf.identity(weight.value)
            weight.assign(average)
            average.assign(value)

    @contextlib.contextmanager
    def swapped(self):
        """The averages in the model inside the block; the trained weights back after it."""
        self._swap()
        try:
            yield
        finally:
            self._swap()
