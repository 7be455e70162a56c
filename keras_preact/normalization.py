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
    run of the same batch).
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if not (training and self.trainable):
            return self._fused(inputs, training=False)[0]
        outputs, mean, variance = self._fused(inputs, training=True)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return outputs

    def normalize_with_batch_statistics(self, inputs):
        """`self(inputs, training=True)` without the update of the moving statistics."""
        if self._fusable(inputs, None):
            return self._fused(inputs, training=True)[0]
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
        return ops.cast(outputs, self.compute_dtype)

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
