"""Calibration and the open-set threshold, from training data only.

* Temperature scaling (Guo et al. 2017): one scalar ``T`` dividing the logits, chosen to
  minimise the negative log-likelihood on held-out *training* instances.
* Open set: an instance whose calibrated top probability is below ``threshold`` is
  ``unknown``. The threshold is the ``reject_rate`` quantile of the top probability on
  held-out training instances that the model classified correctly: about that share of
  known-device instances is rejected, and anything less familiar is rejected more often.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def _nll(logits: np.ndarray, y: np.ndarray, T: float) -> float:
    z = logits / T
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


#: Temperatures are kept in [0.25, 20]: on a held-out set the model classifies perfectly the
#: likelihood keeps rising as T -> 0, which would make the model arbitrarily overconfident.
T_MIN, T_MAX = 0.25, 20.0
#: The open-set threshold never exceeds this (a threshold of 1.0 would reject everything).
MAX_THRESHOLD = 0.99


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising held-out NLL, within [T_MIN, T_MAX]."""
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(lambda lt: _nll(logits, y, float(np.exp(lt))), bounds=(np.log(T_MIN), np.log(T_MAX)),
                          method="bounded")
    return float(np.exp(res.x))


def softmax(logits: np.ndarray, T: float = 1.0) -> np.ndarray:
    z = logits / T
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def open_set_threshold(probs: np.ndarray, y: np.ndarray, reject_rate: float = 0.05) -> float:
    """The top-probability threshold rejecting ``reject_rate`` of correct held-out instances."""
    if len(y) == 0:
        return 0.0
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    ref = top[correct] if correct.any() else top
    return float(min(np.quantile(ref, reject_rate), MAX_THRESHOLD))
