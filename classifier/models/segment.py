"""Bai et al. 2018: an LSTM-CNN cascade on windows of segment features.

Inputs are windows of ``t`` consecutive segment feature vectors (default t=6, T=300 s),
normalised with statistics from the training split only (signed log1p, then z-scores).
Two LSTM layers read the window; their ``t`` outputs are stacked as the columns of a 2-D map
(hidden × t); a convolution of 32 filters 2×2, stride 1, with ReLU; max-pooling 2×2 with
stride 2×2; a fully connected layer with dropout; a softmax output layer.

Paper settings: dropout 0.8 *keep* probability (the TensorFlow convention of the time), so
``nn.Dropout(p=0.2)`` here; learning rate 0.05; L2 coefficient λ 0.01. The paper says neither
which weights the L2 term covers nor which optimiser it used. λ is applied to the fully
connected layers' weights, as TensorFlow code of the time usually did (``λ·l2_loss(W)`` on
the dense layers): applied to every weight, it kept the six-feature model at chance on the
27 IoT Sentinel types (validation data held out of the training folds: 0.02 vs 0.43), and it
changed nothing elsewhere. SGD with momentum 0.9 (Adam at 0.05 did worse on the same
validation data: 0.55 vs 0.69 with all features). Pooling rounds up (``ceil_mode``) so that
windows as short as t=2 still give one pooled column.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classifier.features.instances import Instances
from classifier.features.segments import FEATURE_NAMES


def feature_columns(features: list[str]) -> list[int]:
    return [FEATURE_NAMES.index(f) for f in features]


def dense_weight(name: str) -> bool:
    """The parameters the paper's L2 term applies to: the fully connected layers' weights."""
    return name.startswith(("fc.", "out.")) and name.endswith(".weight")
from classifier.models.base import Model, ModelError, repetition_index
from classifier.models.torchutil import Standardiser, TorchModel, lstm_infer, seed_everything, signed_log, train_loop


class LSTMCNNNet(nn.Module):
    def __init__(self, n_features: int, n_classes: int, t: int, hidden: int = 64, fc: int = 128,
                 dropout: float = 0.2):
        super().__init__()
        if t < 2:
            raise ModelError(f"the LSTM-CNN needs windows of at least 2 segments, got t={t}")
        self.lstm = nn.LSTM(n_features, hidden, num_layers=2, batch_first=True)
        self.conv = nn.Conv2d(1, 32, kernel_size=2, stride=1)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        h2, t2 = math.ceil((hidden - 1) / 2), math.ceil((t - 1) / 2)
        self.fc = nn.Linear(32 * h2 * t2, fc)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(fc, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)                          # (B, t, H)
        m = h.transpose(1, 2).unsqueeze(1)           # (B, 1, H, t): the t outputs as columns
        z = self.pool(torch.relu(self.conv(m)))      # (B, 32, H', t')
        z = torch.relu(self.fc(z.flatten(1)))
        return self.out(self.drop(z))

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` in eval mode, its operators called as functions with the modules'
        own settings (no module-call machinery: at batch 1 that is a fifth of the pass); the
        same logits, bit for bit. In training mode, :meth:`forward` itself."""
        if self.training:
            return self(x)
        conv, pool = self.conv, self.pool
        m = lstm_infer(self.lstm, x).transpose(1, 2).unsqueeze(1)
        z = torch.relu(F.conv2d(m, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups))
        z = F.max_pool2d(z, pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode)
        z = torch.relu(F.linear(z.flatten(1), self.fc.weight, self.fc.bias))
        return F.linear(z, self.out.weight, self.out.bias)      # dropout is the identity in eval mode


class SegmentLSTMCNN(TorchModel, Model):
    kind = "segment-lstm-cnn"
    inputs = ("seg",)

    def __init__(self, features: list[str] | None = None, t: int = 6, hidden: int = 64, fc: int = 128,
                 keep_prob: float = 0.8, lr: float = 0.05, l2: float = 0.01, optimizer: str = "sgd",
                 epochs: int = 20, batch_size: int = 64, min_steps: int = 1000):
        super().__init__()
        self.features = list(features or FEATURE_NAMES)
        self.config = dict(t=t, hidden=hidden, fc=fc, keep_prob=keep_prob, lr=lr, l2=l2, optimizer=optimizer,
                           epochs=epochs, batch_size=batch_size, min_steps=min_steps)
        self.scaler = Standardiser()
        self.temperature = 1.0
        self.net: LSTMCNNNet | None = None

    # -- inputs
    def _prepare(self, inst: Instances) -> np.ndarray:
        """The window's columns this model reads (windows hold every segment feature)."""
        self.check_inputs(inst)
        x = inst.X["seg"]
        if x.shape[1:] != (self.config["t"], len(FEATURE_NAMES)):
            raise ModelError(f"{self.kind} model expects windows of {self.config['t']} segments × "
                             f"{len(FEATURE_NAMES)} segment features, got {x.shape[1]} × {x.shape[2]}")
        cols = self.__dict__.get("_columns")
        if cols is None or cols[0] != self.features:
            cols = self._columns = (list(self.features), np.array(feature_columns(self.features), np.intp))
        return signed_log(x[:, :, cols[1]])

    def _build(self, n_classes: int) -> None:
        c = self.config
        self.net = LSTMCNNNet(len(self.features), n_classes, c["t"], c["hidden"], c["fc"], 1.0 - c["keep_prob"])

    def fit(self, inst, y, seed=0, balance=None, progress=None):
        seed_everything(seed)
        rng = np.random.default_rng(seed)
        self.classes = sorted(set(y.tolist()))
        yi = np.searchsorted(self.classes, y)
        x = self._prepare(inst)
        self.scaler.fit(x.reshape(-1, x.shape[-1]))
        xt = torch.from_numpy(self.scaler(x))
        self._build(len(self.classes))
        c = self.config
        keys = balance if balance is not None else y
        train_loop(self.net, lambda idx: self.net(xt[idx]), len(yi), yi,
                   lambda epoch: repetition_index(keys, rng), c["epochs"], c["optimizer"], c["lr"], c["l2"],
                   c["batch_size"], progress, decayed=dense_weight, min_steps=c["min_steps"])
        self.meta["training"] = {"instances": int(len(y)), "classes": {k: int(v) for k, v in
                                                                       zip(*np.unique(y, return_counts=True))}}
        return self

    def logits(self, inst: Instances) -> np.ndarray:
        if self.net is None:
            raise ModelError("model is not trained")
        x = torch.from_numpy(self.scaler(self._prepare(inst)))
        run = self._run()
        with torch.inference_mode():
            return torch.cat([run(x[b:b + 1024]) for b in range(0, max(len(x), 1), 1024)]).numpy() \
                if len(x) else np.zeros((0, len(self.classes)), np.float32)

    def _run(self):
        """The network's inference pass: its :meth:`LSTMCNNNet.infer` (the baselines' networks
        built on this class have none: their forward)."""
        return getattr(self.net, "infer", None) or self.net

    def explain(self, inst: Instances, top: int = 3) -> list[list[tuple[str, float]]]:
        """Occlusion: for each instance, the features whose replacement by their training mean
        lowers the predicted class's probability most (feature, drop in probability)."""
        x = self.scaler(self._prepare(inst))
        out = []
        run = self._run()
        with torch.inference_mode():
            for i in range(len(x)):
                base = torch.from_numpy(x[i:i + 1])
                p0 = torch.softmax(run(base) / self.temperature, 1)[0]
                k = int(p0.argmax())
                occl = base.repeat(len(self.features), 1, 1)
                for f in range(len(self.features)):
                    occl[f, :, f] = 0.0  # the training mean, after standardising
                drop = (p0[k] - torch.softmax(run(occl) / self.temperature, 1)[:, k]).numpy()
                order = np.argsort(-drop)[:top]
                out.append([(self.features[j], float(drop[j])) for j in order])
        return out

    # -- persistence
    def save(self, path):
        self._save(path, "signed_log1p", features=self.features)

    def _n_inputs(self) -> int:
        return len(self.features)

    @classmethod
    def _from_meta(cls, path, meta):
        from classifier.models.base import MetaChecker
        features = MetaChecker(str(path), meta).names("features", 1, len(FEATURE_NAMES), allowed=FEATURE_NAMES)
        return cls(features, **meta["config"])

    @classmethod
    def load(cls, path):
        tensors, meta = cls._read(path)
        m = cls._from_meta(path, meta)
        m._restore(path, tensors, meta)
        return m
