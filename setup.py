"""Packaging for keras-preact (tool configuration lives in pyproject.toml)."""

from setuptools import find_packages, setup

setup(
    name="keras-preact",
    version="0.1.0",
    description=(
        "Pre-activation residual networks (ResNet-v2, He et al. 2016) for Keras 3: "
        "layers, CIFAR and ImageNet model zoo, tf.data pipelines, tf.distribute "
        "recipes, SavedModel and TFLite export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["keras_preact", "keras_preact.*"]),
    package_data={"keras_preact": ["imagenet_classes.tsv"]},
    # The README's jobs without a checkout (from one: recipes/*.py, python -m export).
    entry_points={
        "console_scripts": [
            "keras-preact-cifar = keras_preact.training.cli:cifar",
            "keras-preact-imagenet = keras_preact.training.cli:imagenet",
            "keras-preact-export = keras_preact.export.cli:run",
            "keras-preact-client = keras_preact.export.client:run",
            "keras-preact-predict = keras_preact.predict:run",
        ]
    },
    install_requires=[
        # Tested upper bounds; TF >= 2.16 is the first release on Keras 3.
        "tensorflow>=2.16,<2.22",
        "keras>=3.3,<3.16",
        "tensorflow-datasets>=4.9,<4.10",
        "tensorboard>=2.16,<2.22",  # TF 2.21 no longer brings it; the recipes log to it
        "absl-py>=2.0,<2.6",
        "scikit-learn>=1.3,<1.10",
        "numpy>=1.26,<2.5",
        "h5py>=3.10,<3.15",
        # Foreign checkpoints: timm .safetensors (NumPy API, no torch) and fb.resnet.torch .t7.
        "safetensors>=0.4,<0.9",
        "torchfile>=0.1,<0.2",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.16,<2.22"],
        "tflite": ["ai-edge-litert>=1.2,<2.4"],
        "serving": ["tensorflow-serving-api>=2.16,<2.22"],
        "onnx": ["tf2onnx>=1.17,<1.18", "onnxruntime>=1.20,<1.33"],
        "analysis": ["matplotlib>=3.7,<3.12"],  # the plots of python -m keras_preact.analysis
        "test": [
            "matplotlib>=3.7,<3.12",
            "pytest>=8,<10",
            "ruff>=0.6,<0.18",
            "ai-edge-litert>=1.2,<2.4",
            "tensorflow-serving-api>=2.16,<2.22",
            "scikit-image>=0.22,<0.27",
            "pillow>=10,<14",
            "tf2onnx>=1.17,<1.18",
            "onnxruntime>=1.20,<1.33",
            # The model zoo on Keras' JAX backend with TensorFlow blocked (test_without_tensorflow).
            "jax[cpu]>=0.4.30,<0.11",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: Keras",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
