"""Weights in and out of keras-preact models.

* `sources()` lists the public pre-activation ImageNet checkpoints this
  package converts (timm, keras.applications, fb.resnet.torch), each with its
  URL, hash, layout and evaluation preprocessing; `weights="imagenet"` picks
  the default for a depth (`DEFAULT_SOURCES`), `weights="timm:..."` etc. names one.
* `load_weights` loads a source, a foreign checkpoint file (format read from
  its content) or a Keras `.weights.h5` / `.keras` file into a model.
* `register_source` adds a checkpoint of your own (e.g. on an internal mirror).

>>> [s.name for s in sources(depth=200)]
['fb:resnet-200']
"""

from keras_preact.weights.convert import FORMATS, detect_format
from keras_preact.weights.download import MIRROR_ENV, WeightsDownloadError
from keras_preact.weights.keras_applications import copy_keras_applications_weights
from keras_preact.weights.load import ResolvedWeights, load_weights, resolve
from keras_preact.weights.native import check_weights_match, read_variable_shapes
from keras_preact.weights.registry import (
    DEFAULT_SOURCES,
    WeightsSource,
    get_source,
    register_source,
    sources,
    unregister_source,
)
