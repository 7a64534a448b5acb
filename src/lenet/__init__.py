"""lenet: build, train, inspect and ship LeNet-family CNNs on Fashion-MNIST and MNIST."""

__version__ = "0.1.0"
