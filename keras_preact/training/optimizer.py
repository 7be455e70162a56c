"""SGD with momentum and coupled L2 weight decay, as in the authors' Torch code.

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

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_preact")
class CoupledSGD(keras.optimizers.SGD):
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
        learning_rate = ops.cast(learning_rate, variable.dtype)
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
