"""`rematerialize(f)`: run `f` again in the backward pass instead of keeping its activations.

On the TensorFlow backend this is TensorFlow's own recipe (`tf.recompute_grad`:
a custom gradient that reruns `f` under a tape once the output gradient
exists) written out here, because `tf.recompute_grad` (what `keras.remat` is
on TensorFlow) nests a second custom gradient in its backward function, whose
graph-mode search for variables walks back from the unit through the whole
forward graph. One walk per rematerialised unit makes tracing quadratic in
depth (ResNet-1001's training step took over ten minutes to trace). Here the variables come from the custom gradient's own search,
bounded by the unit, so a unit's backward function is traced in time
proportional to the unit. Every custom gradient adds an IdentityN node, and
grappler's model pruner rebuilds its map of the whole graph for each of them
(`SplitIdentityNInputs`): quadratic again, minutes for ResNet-1001's step.
(`benchmarks/memory.py` measures remat's memory and time: BENCHMARKS.md.)

So the first rematerialised call on TensorFlow turns grappler's model pruning
off for the process: `tf.config.optimizer.set_experimental_options(
{"disable_model_pruning": True})`. It cannot be scoped to the remat model:
grappler's options are the process's (the eager context's), and a function is
optimised when it first runs and again at every retrace (a new input shape,
the evaluation step), long after the call that traced the unit returned, so a
setting restored after the call would not be in force then. The pruner only
removes nodes that compute nothing (identities, unused outputs): turning it off
changes no result, and other functions of the process lose little. Other
backends use `keras.remat` and change no setting.

>>> import keras
>>> dense = keras.layers.Dense(3)
>>> y = rematerialize(dense)(keras.ops.ones((2, 4)))
>>> tuple(y.shape)
(2, 3)
"""

from __future__ import annotations

import keras


def rematerialize(f):
    """`f(*tensors)` whose activations are recomputed for the gradient, not stored."""
    if keras.backend.backend() != "tensorflow":
        return keras.remat(f)
    import tensorflow as tf

    if not tf.config.optimizer.get_experimental_options().get("disable_model_pruning"):
        tf.config.optimizer.set_experimental_options({"disable_model_pruning": True})

    @tf.custom_gradient
    def call(*args):
        outputs = f(*args)

        def grad(output_grad, variables=()):
            # Recompute only once the output gradient exists: this data dependency keeps
            # the scheduler (and XLA, which ignores control dependencies) from running
            # the recomputation early, which would keep the activations alive again.
            first = tf.reduce_max(tf.reshape(output_grad, [-1])[:1])
            ready = tf.cast(first, tf.bool)
            zero = tf.where(tf.equal(ready, ready), 0.0, float("nan"))
            inputs = [x + tf.cast(zero, x.dtype) for x in args]
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                tape.watch(variables)
                recomputed = f(*inputs)
            grads = tape.gradient(
                recomputed,
                inputs + list(variables),
                output_gradients=output_grad,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return grads[: len(inputs)], grads[len(inputs) :]

        return outputs, grad

    return call
