"""`ResNetV2`: the class of every net of the model zoo, a functional model that knows itself.

As keras-hub's `Backbone`, a subclass builds its graph from its arguments and
hands inputs and outputs to `keras.Model` (`super().__init__(inputs=...,
outputs=...)`), so it is a functional model in every way (layers, summary,
`fit`, saving), and in addition:

* `get_config()` returns the arguments it was built with (depth, layout,
  units, head, the eval protocol; not `weights` or `input_tensor`) and the
  facts that follow from them (units per stage, widths), so
  `keras.models.load_model` and `from_config` rebuild the same architecture;
* the questions asked of a model (its depth, eval protocol, input
  normalisation) are attributes read from that config.
"""

from __future__ import annotations

import json

import keras

from keras_preact.options import EvalProtocol
from keras_preact.weights import load_weights


def _plain(value):
    """`value` as JSON would give it back (tuples as lists), to compare configs."""
    return json.loads(json.dumps(value))


@keras.saving.register_keras_serializable(package="keras_preact")
class ResNetV2(keras.Model):
    """Base class of `ImageNetResNetV2` and `CIFARResNetV2`; not built directly."""

    # Config keys that follow from the arguments: written for readers, checked by from_config.
    DERIVED = ("stage_units", "stage_widths")

    def _init_functional(
        self, inputs, outputs, name, config, weights=None, resolved=None, **kwargs
    ):
        """Makes this a functional model of `inputs` -> `outputs`, then loads `weights`."""
        if keras.utils.get_source_inputs(inputs) != [inputs]:
            raise ValueError(
                "input_tensor must be a keras.Input(...) tensor (as keras.applications takes "
                "it), not the output of other layers: the model could not be rebuilt from its "
                "config. Build the net on its own input and call it on yours: "
                "net = ResNet50V2(input_shape=...); outputs = net(tensor)."
            )
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self._preact_config = _plain(config)
        if weights is not None:
            load_weights(self, weights, resolved)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._preact_config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        derived = {key: config.pop(key) for key in cls.DERIVED if key in config}
        model = cls(**config)
        for key, value in derived.items():
            if _plain(value) != model._preact_config[key]:
                raise ValueError(
                    f"The config of {model.name!r} says {key}={value!r}, but its other "
                    f"arguments build {key}={model._preact_config[key]!r}."
                )
        return model

    @property
    def depth(self):
        """The depth of the net (weighted layers, as the paper counts them)."""
        return self._preact_config["depth"]

    @property
    def eval_protocol(self):
        """How the model's weights are evaluated (`keras_preact.options.EvalProtocol`)."""
        return EvalProtocol.from_dict(self._preact_config.get("eval_protocol"))
