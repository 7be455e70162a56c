"""Weights in and out of keras-preact models.

`load_weights` reads files this package saved (`.weights.h5`, `.keras`) and
checks them against the architecture first; `keras_applications` copies the
weights of a keras.applications ResNet50V2/101V2/152V2 into `layout="keras"`.
"""

from keras_preact.weights.keras_applications import copy_keras_applications_weights
from keras_preact.weights.native import check_weights_match, load_weights, read_variable_shapes
