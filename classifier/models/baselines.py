"""Baselines, side by side with the papers' models.

Bai et al.'s Table II list, on the same segment windows as the LSTM-CNN (flattened t×F,
signed log1p and z-scored with training statistics): SVM (LinearSVC, one-vs-rest), random
forest (300 trees), kNN (k=10), decision tree (depth 12), AdaBoost (50 estimators, learning
rate 0.3), LDA, QDA, MLP — all other parameters scikit-learn's defaults, as in the paper —
plus a CNN and an LSTM (the two halves of the LSTM-CNN alone). CCIT (Sivanathan et al.):
a random forest on the CCIT window features.

QDA: scikit-learn (since 1.6) refuses rank-deficient class covariances with its default
solver; then its ``eigen`` solver with Ledoit-Wolf shrinkage (or a fixed 0.1 where that estimates
none) is used, and noted in the metadata.
LinearSVC has no probabilities; its one-vs-rest decision values go through a softmax.
Calibration (temperature, open-set threshold) works on their log-probabilities as logits.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from classifier.features.instances import Instances
from classifier.features.segments import CCIT_NAMES, FEATURE_NAMES
from classifier.models.base import Model, ModelError
from classifier.models.calibrate import softmax
from classifier.models.segment import SegmentLSTMCNN, feature_columns
from classifier.models.torchutil import Standardiser, signed_log


def _sklearn_estimators(seed: int) -> dict:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
    from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC
    from sklearn.tree import DecisionTreeClassifier
    return {
        "svm": lambda: OneVsRestClassifier(LinearSVC(random_state=seed)),
        "rf": lambda: RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1),
        "knn": lambda: KNeighborsClassifier(n_neighbors=10),
        "dt": lambda: DecisionTreeClassifier(max_depth=12, random_state=seed),
        "adaboost": lambda: AdaBoostClassifier(n_estimators=50, learning_rate=0.3, random_state=seed),
        "lda": lambda: LinearDiscriminantAnalysis(),
        "qda": lambda: QuadraticDiscriminantAnalysis(),
        "mlp": lambda: MLPClassifier(random_state=seed),
        "ccit": lambda: RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1),
    }


SKLEARN_NAMES = ("svm", "rf", "knn", "dt", "adaboost", "lda", "qda", "mlp", "ccit")
LOG_FLOOR = 1e-9


class SklearnModel(Model):
    """A scikit-learn estimator on flattened segment windows (or CCIT rows for ``ccit``)."""

    def __init__(self, name: str, features: list[str] | None = None, t: int = 6):
        super().__init__()
        if name not in SKLEARN_NAMES:
            raise ModelError(f"unknown baseline {name!r}; known: {', '.join(SKLEARN_NAMES)}")
        self.name = name
        self.kind = f"baseline-{name}"
        self.inputs = ("ccit",) if name == "ccit" else ("seg",)
        self.features = list(CCIT_NAMES if name == "ccit" else (features or FEATURE_NAMES))
        self.t = t
        self.scaler = Standardiser()
        self.estimator = None
        self.temperature = 1.0

    def _matrix(self, inst: Instances) -> np.ndarray:
        self.check_inputs(inst)
        x = inst.X[self.inputs[0]]
        if self.name != "ccit":
            x = x[:, :, feature_columns(self.features)]
        return signed_log(x.reshape(len(x), -1))

    def fit(self, inst, y, seed=0, balance=None, progress=None):
        x = self._matrix(inst)
        self.scaler.fit(x)
        self.classes = sorted(set(y.tolist()))
        self.estimator = _sklearn_estimators(seed)[self.name]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence / collinearity warnings of default settings
            try:
                self.estimator.fit(self.scaler(x), y)
            except np.linalg.LinAlgError:
                if self.name != "qda":
                    raise
                # scikit-learn >= 1.6 refuses rank-deficient class covariances with its default
                # solver (earlier versions warned), whatever reg_param when a class has fewer
                # samples than features; its eigen solver with Ledoit-Wolf shrinkage fits.
                # (Ledoit-Wolf may estimate no shrinkage at all; then a fixed 0.1, which makes any
                # class covariance with some variance full rank.)
                from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
                for shrinkage in ("auto", 0.1):
                    try:
                        self.estimator = QuadraticDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
                        self.estimator.fit(self.scaler(x), y)
                        break
                    except np.linalg.LinAlgError:
                        if shrinkage != "auto":
                            raise
                self.meta["note"] = (f"default QDA failed on rank-deficient covariances; eigen solver, "
                                     f"shrinkage {shrinkage}")
        return self

    def _proba(self, inst):
        if len(inst) == 0:
            return np.zeros((0, len(self.classes)))
        x = self.scaler(self._matrix(inst))
        est_classes = list(self.estimator.classes_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if hasattr(self.estimator, "predict_proba") and self.name != "svm":
                p = self.estimator.predict_proba(x)
            else:
                d = self.estimator.decision_function(x)
                d = d[:, None] if d.ndim == 1 else d
                if d.shape[1] == 1:  # binary: one decision value
                    d = np.hstack([-d, d])
                e = np.exp(d - d.max(axis=1, keepdims=True))
                p = e / e.sum(axis=1, keepdims=True)
        p = np.nan_to_num(p, nan=1.0 / len(est_classes))
        out = np.zeros((len(x), len(self.classes)))
        out[:, [self.classes.index(c) for c in est_classes]] = p
        return out

    def logits(self, inst) -> np.ndarray:
        """Log-probabilities (floored at 1e-9): what calibration scales, as the torch models' logits."""
        return np.log(np.maximum(self._proba(inst), LOG_FLOOR))

    def predict_proba(self, inst):
        """The estimator's probabilities; after calibration (a temperature other than 1),
        ``softmax(logits / T)``."""
        if self.temperature == 1.0:
            return self._proba(inst)
        z = self.logits(inst)
        return softmax(z, self.temperature) if len(z) else z

    def save(self, path):
        import skops.io as sio
        sio.dump({"name": self.name, "features": self.features, "t": self.t, "classes": self.classes,
                  "mean": self.scaler.mean, "std": self.scaler.std, "estimator": self.estimator,
                  "temperature": float(self.temperature)}, str(path))

    @classmethod
    def load(cls, path):
        import skops.io as sio
        untrusted = sio.get_untrusted_types(file=str(path))
        bad = [t for t in untrusted if not t.startswith(("sklearn.", "numpy."))]
        if bad:
            raise ModelError(f"{path}: refuses to load types outside scikit-learn/numpy: {', '.join(bad[:5])}")
        d = sio.load(str(path), trusted=untrusted)
        m = cls(d["name"], d["features"], d["t"])
        m.classes = list(d["classes"])
        m.scaler = Standardiser(d["mean"], d["std"])
        m.estimator = d["estimator"]
        m.temperature = float(d.get("temperature", 1.0))
        return m


class CNNNet(nn.Module):
    """The LSTM-CNN without its LSTM: the same convolution on the (features × t) map."""

    def __init__(self, n_features, n_classes, t, hidden=64, fc=128, dropout=0.2):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, kernel_size=2, stride=1)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fc = nn.Linear(32 * math.ceil((n_features - 1) / 2) * math.ceil((t - 1) / 2), fc)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(fc, n_classes)

    def forward(self, x):
        z = self.pool(torch.relu(self.conv(x.transpose(1, 2).unsqueeze(1))))
        return self.out(self.drop(torch.relu(self.fc(z.flatten(1)))))


class LSTMNet(nn.Module):
    """The LSTM-CNN without its CNN: two LSTM layers, the last output, a dense layer."""

    def __init__(self, n_features, n_classes, t, hidden=64, fc=128, dropout=0.2):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, fc)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(fc, n_classes)

    def forward(self, x):
        h, _ = self.lstm(x)
        return self.out(self.drop(torch.relu(self.fc(h[:, -1]))))


class SegmentCNN(SegmentLSTMCNN):
    kind = "baseline-cnn"

    def _build(self, n_classes):
        c = self.config
        self.net = CNNNet(len(self.features), n_classes, c["t"], c["hidden"], c["fc"], 1.0 - c["keep_prob"])


class SegmentLSTM(SegmentLSTMCNN):
    kind = "baseline-lstm"

    def _build(self, n_classes):
        c = self.config
        self.net = LSTMNet(len(self.features), n_classes, c["t"], c["hidden"], c["fc"], 1.0 - c["keep_prob"])
