"""The optimizers of the recipes: the paper's SGD with coupled L2, and AdamW and LAMB with decoupled decay.

fb.resnet.torch trains with Torch's `optim.sgd` (dampening 0, no Nesterov),
which adds the weight decay to the gradient *before* momentum, for every
trainable parameter (BN gamma/beta and biases included):

    g = grad + weight_decay * w
    buf = momentum * buf + g
    w = w - lr * buf

`keras.optimizers.SGD(weight_decay=...)` decays decoupled (`w -= lr * wd * w`
after the step) and folds the learning rate into the momentum buffer, so a
learning-rate drop takes effect at once here but only gradually there. This
optimizer implements the Torch update exactly.
"""

from __future__ import annotations

import re

import keras
from keras import ops


class _PerVariableRates:
    """Scales each variable's learning rate by `learning_rate_multipliers[variable.path]`.

    Set `learning_rate_multipliers` (`{path: factor}`, e.g. `layer_decay_multipliers`)
    before the optimizer is built; variables it does not name keep factor 1.
    """

    learning_rate_multipliers = None

    def build(self, var_list):
        if not self.built:
            factors = self.learning_rate_multipliers or {}
            self._rate_factors = [float(factors.get(v.path, 1.0)) for v in var_list]
        super().build(var_list)

    def _rate(self, learning_rate, variable):
        """`learning_rate` (cast to the variable's dtype) times the variable's factor."""
        learning_rate = ops.cast(learning_rate, variable.dtype)
        factor = self._rate_factors[self._get_variable_index(variable)]
        return learning_rate if factor == 1.0 else learning_rate * factor


def _replicas_in_sync():
    """How many replicas compute this step's gradients (1 outside a TensorFlow strategy)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


class _ClipSummedGradients:
    """Clips (`global_clipnorm`, `clipnorm`, `clipvalue`) the gradient of the global batch.

    Keras clips (`_clip_gradients`) before its TensorFlow optimizer sums the
    replicas' gradients (`_all_reduce_sum_gradients`): under a multi-replica
    strategy it clips each replica's share instead, which makes a global norm
    of 1.0 one of up to 1.0 per replica. Here, with more than one replica, the
    clipping waits for the sum, so that a run clips the same on 1 device or 8.
    (Should a Keras release no longer sum through `_all_reduce_sum_gradients`,
    the clipping stays Keras' own rather than be skipped.)
    """

    def _clips_the_sum(self):
        summing = getattr(super(), "_all_reduce_sum_gradients", None) is not None
        return summing and _replicas_in_sync() > 1

    def _clip_gradients(self, grads):
        if self._clips_the_sum():
            return grads  # clipped once summed over the replicas, below
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        summed = super()._all_reduce_sum_gradients(grads_and_vars)
        if not self._clips_the_sum():
            return summed
        present = [i for i, (grad, _) in enumerate(summed) if grad is not None]
        clipped = dict(zip(present, super()._clip_gradients([summed[i][0] for i in present])))
        return [(clipped.get(i), var) for i, (_, var) in enumerate(summed)]


@keras.saving.register_keras_serializable(package="keras_preact")
class CoupledSGD(_ClipSummedGradients, _PerVariableRates, keras.optimizers.SGD):
    """SGD with momentum where L2 weight decay is added to the gradient before momentum.

    Args:
        learning_rate: a float or a `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: momentum factor (0.9 in the paper).
        l2: coupled weight-decay coefficient (1e-4 in the paper), applied to all
            trainable variables.

    Example:

    >>> opt = CoupledSGD(learning_rate=0.1, momentum=0.9, l2=1e-4)
    >>> w = keras.Variable([1.0])
    >>> opt.apply([keras.ops.convert_to_tensor([0.5])], [w])
    >>> round(float(w.numpy()[0]), 6)  # 1 - 0.1 * (0.5 + 1e-4 * 1)
    0.94999
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, l2=1e-4, name="coupled_sgd", **kwargs):
        if kwargs.get("weight_decay") is not None:
            raise ValueError(
                "CoupledSGD takes `l2` (coupled); `weight_decay` (decoupled) is not used."
            )
        kwargs.pop("weight_decay", None)
        kwargs.pop("nesterov", None)
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            nesterov=False,
            name=name,
            **kwargs,
        )
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}.")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._rate(learning_rate, variable)
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        if self.momentum:
            buf = self.momentums[self._get_variable_index(variable)]
            gradient = ops.add(ops.multiply(buf, ops.cast(self.momentum, buf.dtype)), gradient)
            self.assign(buf, gradient)
        self.assign_sub(variable, ops.multiply(gradient, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.pop("nesterov", None)
        config.pop("weight_decay", None)
        config["l2"] = self.l2
        return config


OPTIMIZERS = ("sgd", "adamw", "lamb")


def decays(variable):
    """Whether decoupled weight decay applies to `variable`: kernels yes, norms and biases no.

    timm's rule (`param_groups_weight_decay`): a parameter of rank <= 1
    (a bias, a norm's scale or offset) is not decayed.

    >>> import numpy as np
    >>> decays(keras.Variable(np.ones([3, 3, 8, 8]))), decays(keras.Variable(np.ones([8])))
    (True, False)
    """
    return len(variable.shape) >= 2


class _DecayKernelsOnly:
    """Excludes every variable `decays` rejects from weight decay when the optimizer is built."""

    def build(self, var_list):
        if not self.built:
            self.exclude_from_weight_decay(var_list=[v for v in var_list if not decays(v)])
        super().build(var_list)


@keras.saving.register_keras_serializable(package="keras_preact")
class AdamW(_ClipSummedGradients, _PerVariableRates, _DecayKernelsOnly, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that decays kernels only (not norm parameters or biases).

    The decay is decoupled, `w -= learning_rate * weight_decay * w` before the
    Adam step (as `torch.optim.AdamW`), and skips every variable of rank <= 1
    as timm does.

    >>> import numpy as np
    >>> opt = AdamW(learning_rate=0.1, weight_decay=0.5)
    >>> kernel, bias = keras.Variable(np.ones([1, 1])), keras.Variable(np.ones([1]))
    >>> opt.apply([keras.ops.zeros([1, 1]), keras.ops.zeros([1])], [kernel, bias])
    >>> round(float(kernel.numpy()[0, 0]), 6), float(bias.numpy()[0])  # 1 - 0.1 * 0.5; no decay
    (0.95, 1.0)
    """

    def _apply_weight_decay(self, variables):
        """Nothing here: `update_step` decays, at the variable's own learning rate."""

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = self._rate(learning_rate, variable)
        if self.weight_decay and self._use_weight_decay(variable):
            decay = ops.cast(self.weight_decay, variable.dtype)
            self.assign_sub(variable, ops.multiply(variable, decay * learning_rate))
        super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="keras_preact")
class Lamb(_ClipSummedGradients, _PerVariableRates, _DecayKernelsOnly, keras.optimizers.Lamb):
    """LAMB as timm's `Lamb` and the LAMB paper: weight decay inside the trust ratio.

    For a decayed variable (a kernel), with Adam's bias-corrected moments
    `m_hat`, `v_hat`:

        update = m_hat / (sqrt(v_hat) + epsilon) + weight_decay * w
        w -= learning_rate * (||w|| / ||update||) * update

    and for a norm parameter or bias the plain Adam step, with no decay and no
    trust ratio (timm's `always_adapt=False`). Gradients are first clipped to
    a global norm of `global_clipnorm` (1.0, timm's `max_grad_norm`).

    `keras.optimizers.Lamb` does not serve: it decays outside the trust ratio
    (like AdamW) and applies the ratio to every variable, norms and biases
    included. Under a multi-replica strategy it clips each replica's share of
    the gradient; this one clips their sum (`_ClipSummedGradients`).

    The trust ratio makes a kernel's step `learning_rate * ||w||` long:

    >>> import numpy as np
    >>> opt = Lamb(learning_rate=0.1, weight_decay=0.5, global_clipnorm=None)
    >>> w = keras.Variable(np.full([2, 2], 3.0))  # ||w|| = 6
    >>> opt.apply([keras.ops.ones([2, 2])], [w])
    >>> np.round(w.numpy(), 4).tolist()  # 3 - 0.1 * 6 / 2
    [[2.7, 2.7], [2.7, 2.7]]
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=0.0,
        global_clipnorm=1.0,
        name="lamb",
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            weight_decay=weight_decay,
            global_clipnorm=global_clipnorm,
            name=name,
            **kwargs,
        )

    def _apply_weight_decay(self, variables):
        """Nothing here: `update_step` decays inside the trust ratio."""

    def update_step(self, gradient, variable, learning_rate):
        lr = self._rate(learning_rate, variable)
        gradient = ops.cast(gradient, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        m_hat = ops.divide(m, 1.0 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = ops.divide(v, 1.0 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        update = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon))
        if self.weight_decay and self._use_weight_decay(variable):
            update = ops.add(
                update, ops.multiply(ops.cast(self.weight_decay, variable.dtype), variable)
            )
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            ratio = ops.where(
                ops.logical_and(w_norm > 0, u_norm > 0), ops.divide(w_norm, u_norm), 1.0
            )
            update = ops.multiply(update, ratio)
        self.assign_sub(variable, ops.multiply(update, lr))


def make_optimizer(
    name, learning_rate, *, momentum=0.9, weight_decay=0.0, learning_rate_multipliers=None
):
    """The recipes' optimizer `name` ("sgd", "adamw" or "lamb") at `learning_rate`.

    "sgd" is `CoupledSGD` (the paper's: L2 added to every gradient);
    "adamw" and "lamb" decay decoupled, kernels only (`AdamW`, `Lamb`).
    `learning_rate_multipliers` (`{variable path: factor}`) scales each
    variable's rate, decay included (`layer_decay_multipliers`).

    >>> type(make_optimizer("lamb", 0.008, weight_decay=0.02)).__name__
    'Lamb'
    """
    if name == "sgd":
        optimizer = CoupledSGD(learning_rate, momentum=momentum, l2=weight_decay)
    elif name == "adamw":
        optimizer = AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    elif name == "lamb":
        optimizer = Lamb(learning_rate=learning_rate, weight_decay=weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {name!r}. Allowed values: {', '.join(OPTIMIZERS)}.")
    optimizer.learning_rate_multipliers = learning_rate_multipliers
    return optimizer


_UNIT = re.compile(r"stage\d+_unit\d+$")


def layer_decay_multipliers(model, decay):
    """Layer-wise learning-rate decay (BEiT's, as timm's `param_groups_layer_decay`).

    The groups, in order: the stem (every layer before the first residual
    unit), each unit, then the final norm and the classifier. Group `i` of
    `n` trains at `decay ** (n - 1 - i)` times the rate: the classifier at 1.

    >>> import keras_preact
    >>> factors = layer_decay_multipliers(keras_preact.ResNet20V2(), 0.5)  # 9 units
    >>> factors["stem_conv/kernel"], factors["stage3_unit3/conv2/kernel"], factors["predictions/bias"]
    (0.0009765625, 0.5, 1.0)
    """
    is_unit = [bool(_UNIT.match(layer.name)) for layer in model.layers]
    if not any(is_unit):
        raise ValueError(
            "layer_decay needs a keras_preact ResNetV2 (residual units named stageS_unitU)."
        )
    last_unit = max(i for i, unit in enumerate(is_unit) if unit)
    head = sum(is_unit) + 1
    factors, group = {}, 0
    for i, (layer, unit) in enumerate(zip(model.layers, is_unit)):
        group += unit
        index = head if i > last_unit else group
        for weight in layer.weights:
            factors[weight.path] = float(decay) ** (head - index)
    return factors
