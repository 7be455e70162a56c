"""`float32_copy`: the copy of a trained model that is saved and exported.

Training may run in mixed precision under a tf.distribute strategy and ends
in logits; what is saved (`model.keras`) and exported (SavedModel, TFLite)
is one float32 model with plain variables and, for serving, a softmax head
and any input height/width. One function makes that copy for both.

>>> import keras_preact
>>> trained = keras_preact.ResNet20V2(classes=3, classifier_activation=None)
>>> served = float32_copy(trained, classifier_activation="softmax")
>>> served.input_shape, served.get_layer("predictions").activation.__name__
((None, None, None, 3), 'softmax')
"""

from __future__ import annotations

from keras_preact.requirements import require_tensorflow

require_tensorflow("keras_preact.models.float32")

import contextlib

import keras
import tensorflow as tf

from keras_preact.models.base import ResNetV2

_KEEP = object()


@contextlib.contextmanager
def _global_dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_copy(model, dynamic_hw=True, classifier_activation=_KEEP):
    """A float32 copy of a functional model with the same weights, outside any strategy.

    Mixed-precision layers become float32 and rematerialised units plain;
    variables are plain (not mirrored), so the copy saves and exports the same
    way whatever strategy trained the original. With `dynamic_hw`, the copy
    takes `[N, H, W, C]` of any H/W when the network allows it (convolutions
    and global pooling); otherwise it keeps the original input size.
    `classifier_activation` replaces the activation of the `predictions` layer
    (e.g. `"softmax"` on a model trained on logits).
    """
    return policy_copy(model, "float32", dynamic_hw, classifier_activation)


def policy_copy(model, policy, dynamic_hw=None, classifier_activation=_KEEP):
    """`float32_copy` with every layer under the Keras dtype policy `policy` instead,
    e.g. "mixed_bfloat16" (a bfloat16 serving variant). `dynamic_hw` None: as `model`.

    >>> import keras_preact
    >>> served = policy_copy(keras_preact.ResNet20V2(classes=3), "mixed_bfloat16")
    >>> stem = [layer for layer in served.layers if isinstance(layer, keras.layers.Conv2D)][0]
    >>> stem.dtype_policy.name  # the classifier stays float32, as the builders make it
    'mixed_bfloat16'
    """
    if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
        raise RuntimeError("float32_copy must not run inside a replica function (strategy.run).")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Export expects one image input and one probability output; {model.name!r} has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )

    if dynamic_hw is None:
        dynamic_hw = tuple(model.inputs[0].shape[1:3]) == (None, None)
    weights = model.get_weights()  # numpy; reads mirrored/distributed variables too
    with _global_dtype_policy(policy):
        if isinstance(model, ResNetV2):
            copy = _rebuilt(model, dynamic_hw, classifier_activation)
        else:
            copy = _cloned(model, policy, dynamic_hw, classifier_activation)
    copy.set_weights(weights)
    return copy


def _rebuilt(model, dynamic_hw, classifier_activation):
    """A keras-preact model built again from its config, without remat, under the global policy."""
    config = dict(model.get_config(), remat=False)
    if dynamic_hw:
        config["input_shape"] = [None, None, config["input_shape"][-1]]
    if classifier_activation is not _KEEP:
        config["classifier_activation"] = classifier_activation
    return type(model).from_config(config)


def _cloned(model, policy, dynamic_hw, classifier_activation):
    """Any other functional model (e.g. a .keras file saved before the model class), cloned
    layer by layer with layers under `policy`."""

    def layer_under_policy(layer):
        config = layer.get_config()
        if "dtype" in config:
            # The classifier stays float32 under a mixed policy, as the builders make it.
            keep_float32 = layer.name == "predictions" and policy.startswith("mixed")
            config["dtype"] = "float32" if keep_float32 else policy
        if config.get("remat"):
            config["remat"] = False  # a training-memory setting; the copy is for inference
        if layer.name == "predictions" and classifier_activation is not _KEEP:
            config["activation"] = classifier_activation
        return layer.__class__.from_config(config)

    if dynamic_hw:
        channels = model.inputs[0].shape[-1]
        name = model.inputs[0].name or "image"
        try:
            inputs = keras.Input((None, None, channels), name=name, dtype="float32")
            return keras.models.clone_model(
                model, input_tensors=inputs, clone_function=layer_under_policy
            )
        except (ValueError, TypeError):
            pass  # e.g. a Flatten head: keep the trained size
    return keras.models.clone_model(model, clone_function=layer_under_policy)
