"""Models: the pipes and classifiers of the study, the pair network, and the LightningModule."""

from mnist_compare.models.module import CompareModule
from mnist_compare.models.nets import PairNet, conv_pipe, mlp, prob_classifier

__all__ = ["CompareModule", "PairNet", "conv_pipe", "mlp", "prob_classifier"]
