"""Models: Bai et al.'s LSTM-CNN on segment windows, Chen et al.'s LSTM with attention on
session sequences, and the baselines, all behind :class:`~classifier.models.base.Model`;
every kind is registered in :mod:`classifier.models.registry` (which loads saved models)."""

from classifier.models.base import Model, ModelError  # noqa: F401
