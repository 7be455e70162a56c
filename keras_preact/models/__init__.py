"""The model zoo: depth tables over the pre-activation units; every net is a `ResNetV2`."""

from keras_preact.models.base import ResNetV2
from keras_preact.models.cifar import (
    CIFAR_DEPTHS,
    CIFARResNetV2,
    ResNet20V2,
    ResNet32V2,
    ResNet44V2,
    ResNet56V2,
    ResNet110V2,
    ResNet164V2,
    ResNet1001V2,
)
from keras_preact.models.imagenet import (
    IMAGENET_DEPTHS,
    LAYOUTS,
    ImageNetResNetV2,
    Layout,
    ResNet18V2,
    ResNet34V2,
    ResNet50V2,
    ResNet101V2,
    ResNet152V2,
    ResNet200V2,
)
