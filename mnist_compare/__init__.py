"""mnist_compare: re-run and extend the 2019 MNIST digit-comparison study."""
