"""mnist_compare: re-run and extend the 2019 MNIST digit-comparison study."""

__version__ = "0.2.0"
