"""The reference networks, each as its source has it.

Layer sizes, padding and dropout rates follow each source; parameter counts
are pinned in tests/test_models.py, and with norm="batch" (a BN layer after
every hidden conv/dense, which the sources do not have) in tests/test_norm.py.
"""
from models.network import Conv
from models.network import Dense
from models.network import Flatten
from models.network import NetworkSpec
from models.network import Output
from models.network import Pool
from models.registry import register


@register
def keras_mnist_cnn():
    """keras-team/keras examples/mnist_cnn.py (Keras 2); its docstring's 99.25% after 12 epochs dates from an earlier
    form of it (two 32-filter convs)."""
    return NetworkSpec(
        name="keras_mnist_cnn",
        source="Keras examples/mnist_cnn.py (Adadelta lr=1.0, batch 128, 12 epochs)",
        layers=(
            Conv("conv1", 32, 3),
            Conv("conv2", 64, 3),
            Pool("pool1"),
            Flatten(),
            Dense("dense1", 128),
            Output(softmax=True),
        ),
        canonical="pool1.post:0.25,dense1.post:0.5",
        conv_rate=0.25,  # the source's own conv-stack rate
    )


@register
def tf_layers_cnn():
    """TensorFlow 'A Guide to TF Layers' MNIST CNN: 97.3% after 20,000 steps."""
    return NetworkSpec(
        name="tf_layers_cnn",
        source="TensorFlow 'A Guide to TF Layers: Building a CNN' (SGD 0.001, batch 100, 20k steps)",
        layers=(
            Conv("conv1", 32, 5, padding="same"),
            Pool("pool1"),
            Conv("conv2", 64, 5, padding="same"),
            Pool("pool2"),
            Flatten(),
            Dense("dense1", 1024),
            Output(softmax=False),  # the guide returns logits to a sparse softmax loss
        ),
        canonical="dense1.post:0.4",
    )


@register
def keras_io_convnet():
    """keras.io 'Simple MNIST convnet' (~99% test accuracy after 15 epochs)."""
    return NetworkSpec(
        name="keras_io_convnet",
        source="keras.io/examples/vision/mnist_convnet (Adam, batch 128, 15 epochs)",
        layers=(
            Conv("conv1", 32, 3),
            Pool("pool1"),
            Conv("conv2", 64, 3),
            Pool("pool2"),
            Flatten(),
            Output(softmax=True),
        ),
        canonical="logits.pre:0.5",
    )


@register
def dense_mlp():
    """The Dense(128, activation='relu') + Dropout snippet, at rate 0.5.

    Its one published source, the TensorFlow 2 quickstart for beginners, has rate 0.2:
    configs/tf_quickstart_mlp.cfg (--rate=0.2) reproduces it. The 0.5 here is no source's: it is Srivastava
    et al.'s rate for hidden units, kept as the default because the studies trained with it."""
    return NetworkSpec(
        name="dense_mlp",
        source="the Flatten -> Dense(128, relu) -> Dropout -> Dense(10) snippet",
        layers=(Flatten(), Dense("dense1", 128), Output(softmax=False)),
        canonical="dense1.post:0.5",
    )
