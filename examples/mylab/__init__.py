"""A user's own package beside mnist_compare: networks and a training variant (docs/extending.md)."""
