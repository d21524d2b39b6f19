"""Models: Bai et al.'s LSTM-CNN on segment windows, Chen et al.'s LSTM with attention on
session sequences, and the baselines, all behind :class:`~classifier.models.base.Model`."""

from classifier.models.base import Model, ModelError, load_model  # noqa: F401
