"""keras-preact: pre-activation residual networks (ResNet-v2, He et al. 2016) for Keras 3.

>>> import keras_preact
>>> model = keras_preact.ResNet50V2(weights=None)            # the paper's layout
>>> model.output_shape, f"{sum(w.numpy().size for w in model.trainable_weights):,}"
((None, 1000), '25,549,480')
>>> cifar = keras_preact.ResNet164V2(classes=100)            # CIFAR bottleneck net
>>> cifar.output_shape, f"{sum(w.numpy().size for w in cifar.trainable_weights):,}"
((None, 100), '1,726,388')
>>> r200 = keras_preact.ResNet200V2(weights="imagenet")      # doctest: +SKIP
"""

# First: our command lines start TensorFlow quietly (nothing changes for library use).
from keras_preact import console

console.quiet_start()

from keras_preact import weights
from keras_preact.layers import (
    SHORTCUTS,
    UNIT_VARIANTS,
    PreActBlock,
    PreActBottleneck,
    SymmetricMaxPooling2D,
)
from keras_preact.models import (
    CIFAR_DEPTHS,
    IMAGENET_DEPTHS,
    LAYOUTS,
    CIFARResNetV2,
    ImageNetResNetV2,
    Layout,
    ResNet18V2,
    ResNet20V2,
    ResNet32V2,
    ResNet34V2,
    ResNet44V2,
    ResNet50V2,
    ResNet56V2,
    ResNet101V2,
    ResNet110V2,
    ResNet152V2,
    ResNet164V2,
    ResNet200V2,
    ResNet1001V2,
    ResNetV2,
)
from keras_preact.options import EvalProtocol, ShortcutOptions
from keras_preact.preprocessing import (
    NORMALIZATIONS,
    decode_predictions,
    eval_preprocessing,
    imagenet_classes,
    preprocess_input,
)
from keras_preact.weights import load_weights, sources

__version__ = "0.1.0"
