"""`FusedBatchNormalization`: Keras' BatchNormalization through TensorFlow's fused kernel.

Keras 3's `BatchNormalization` is written in `keras.ops`, so on TensorFlow a
training call is half a dozen kernels (batch mean, squared difference,
variance, then scale and shift), and its gradient as many again; inference is
a multiply and an add. TensorFlow has one kernel for each (`FusedBatchNormV3`
and its gradient), the one tf.keras 2 used, and at inference its graph
optimizer fuses a convolution, the fused BN after it and a ReLU into one
kernel on CPUs. A pre-activation ResNet normalises three times per bottleneck
unit, so this is a large share of a step (BENCHMARKS.md measures it:
`benchmarks/model_throughput.py`, against keras.applications' ResNet50V2).

`FusedBatchNormalization` is `keras.layers.BatchNormalization` with that one
change: same arguments, weights, weight names, config and moving-statistics
update (Keras' momentum convention, with the biased batch variance), so weight
files and converters see a Keras BatchNormalization. It takes the fused kernel
only where it computes the same thing: the TensorFlow backend, 4-D
channels-last inputs, and none of `renorm`, `synchronized` (cross-replica
statistics), masks, or `center`/`scale` off. Everywhere else it is Keras' own
call.

>>> import numpy as np
>>> norm = FusedBatchNormalization(momentum=0.9)
>>> y = norm(np.arange(16.0).reshape(2, 2, 2, 2), training=True)
>>> [round(float(v), 3) for v in norm.moving_mean.numpy()]
[0.7, 0.8]
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_preact")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that runs TensorFlow's fused kernel.

    See the module docstring for when the fused kernel is used. Besides `call`,
    `normalize_with_batch_statistics(x)` normalises with the batch's statistics
    without moving the layer's moving statistics (a rematerialised unit's second
    run of the same batch), and `batch_statistics(x)` also returns them for
    `move_statistics` to apply outside a function that may not assign variables
    (`keras.remat` on JAX).
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if not (training and self.trainable):
            return self._fused(inputs, training=False)[0]
        outputs, mean, variance = self._fused(inputs, training=True)
        self.move_statistics(mean, variance)
        return outputs

    def move_statistics(self, mean, variance):
        """Moves the moving statistics towards a batch's `mean` and biased `variance`, as a
        training call does (Keras' momentum convention)."""
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))

    def normalize_with_batch_statistics(self, inputs):
        """`self(inputs, training=True)` without the update of the moving statistics."""
        return self.batch_statistics(inputs)[0]

    def batch_statistics(self, inputs):
        """`(outputs, mean, variance)`: what `self(inputs, training=True)` returns, and the
        batch statistics it moves the moving statistics towards (`move_statistics`); nothing
        is assigned."""
        if self._fusable(inputs, None):
            return self._fused(inputs, training=True)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axes = [i for i in range(len(x.shape)) if i != self.axis % len(x.shape)]
        mean, variance = ops.moments(x, axes=axes, synchronized=self.synchronized)
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=self.axis,
            offset=ops.cast(self.beta, x.dtype) if self.center else None,
            scale=ops.cast(self.gamma, x.dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype), mean, variance

    def _fusable(self, inputs, mask):
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and rank == 4
            and self.axis % rank == 3
            and mask is None
            and self.center
            and self.scale
            and not self.renorm
            and not self.synchronized
        )

    def _fused(self, inputs, training):
        """(normalised inputs, batch mean, biased batch variance) from one fused kernel;
        with `training` False, normalised by the moving statistics (and those returned)."""
        import tensorflow as tf

        x = tf.cast(inputs, self.compute_dtype)
        if training:
            moving = (tf.constant([], "float32"), tf.constant([], "float32"))
        else:
            moving = (self.moving_mean, self.moving_variance)
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=tf.cast(self.gamma, "float32"),
            offset=tf.cast(self.beta, "float32"),
            mean=tf.cast(moving[0], "float32"),
            variance=tf.cast(moving[1], "float32"),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=training,
        )
        if training:
            # The kernel returns the Bessel-corrected variance (for a moving average);
            # Keras' moving variance follows the biased one, as the normalisation does.
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        return outputs, mean, variance


@keras.saving.register_keras_serializable(package="keras_preact")
class EvoNormS0(keras.layers.Layer):
    """EvoNorm-S0 (Liu et al. 2020), a normalisation with its own activation, as timm's.

    `y = x * sigmoid(v * x) / sqrt(var_g(x) + epsilon) * gamma + beta`, where
    `var_g` is the biased variance over each group of `groups` channel groups
    and the spatial axes, computed in float32 (timm's `EvoNorm2dS0`: no mean
    is subtracted in the numerator). A net with these units applies no ReLU
    after it.

    >>> import numpy as np
    >>> layer = EvoNormS0(groups=2)
    >>> tuple(layer(np.ones((1, 4, 4, 4), "float32")).shape)
    (1, 4, 4, 4)
    """

    def __init__(self, groups=32, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise ValueError(
                f"{self.name}: {channels} channels do not split into {self.groups} groups."
            )
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.v = self.add_weight(shape=(channels,), initializer="ones", name="v")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        shape = ops.shape(x)
        grouped = ops.reshape(x, (shape[0], shape[1], shape[2], self.groups, -1))
        variance = ops.var(grouped, axis=(1, 2, 4), keepdims=True)
        std = ops.reshape(
            ops.broadcast_to(ops.sqrt(variance + self.epsilon), ops.shape(grouped)), shape
        )
        gamma, beta, v = (ops.cast(w, "float32") for w in (self.gamma, self.beta, self.v))
        outputs = x * ops.sigmoid(v * x) / std * gamma + beta
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon}


NORMS = ("batch", "group", "evonorm_s0")


def make_norm(kind, name, *, epsilon=1e-5, momentum=0.9, zero_gamma=False, dtype=None):
    """The normalisation layer of `kind`: `"batch"` (`FusedBatchNormalization`), `"group"`
    (`keras.layers.GroupNormalization`, 32 groups, as BiT and timm's `GroupNormAct`) or
    `"evonorm_s0"` (`EvoNormS0`, 32 groups, its own activation)."""
    gamma = "zeros" if zero_gamma else "ones"
    if kind == "batch":
        return FusedBatchNormalization(
            epsilon=epsilon, momentum=momentum, gamma_initializer=gamma, name=name, dtype=dtype
        )
    if kind == "group":
        return keras.layers.GroupNormalization(
            groups=32, epsilon=epsilon, gamma_initializer=gamma, name=name, dtype=dtype
        )
    if kind == "evonorm_s0":
        return EvoNormS0(groups=32, epsilon=epsilon, name=name, dtype=dtype)
    raise ValueError(f"Unknown norm {kind!r}. Allowed values: {', '.join(map(repr, NORMS))}.")
