"""Small shared pieces for the torch models: seeding, training loop, normalisation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def signed_log(x: np.ndarray) -> np.ndarray:
    """log1p of magnitudes, keeping the sign (counts and byte sums are heavy-tailed;
    skewness can be negative)."""
    return np.sign(x) * np.log1p(np.abs(x))


class Standardiser:
    """z-scores with statistics from the training split only."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = mean
        self.std = std

    def fit(self, x: np.ndarray, axis=0) -> "Standardiser":
        self.mean = x.mean(axis=axis).astype(np.float32)
        std = x.std(axis=axis).astype(np.float32)
        self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def train_loop(module: nn.Module, forward, n: int, y: np.ndarray, order_fn, epochs: int, optimizer: str,
               lr: float, weight_decay: float, batch_size: int, progress=None, decayed=None,
               min_steps: int = 0) -> list[float]:
    """Mini-batch training with cross-entropy. ``forward(idx)`` gives logits for instances
    ``idx``; ``order_fn(epoch)`` gives the epoch's instance order (with repetitions).
    ``min_steps``: run more epochs than ``epochs`` where that many would make fewer optimiser
    steps (small training sets).
    ``progress``: a description (an epoch progress bar on a terminal) or ``f(epoch, loss)``.
    ``decayed(name)`` says which parameters the L2 term (``weight_decay``) applies to (all if None)."""
    named = list(module.named_parameters())
    on = [p for name, p in named if decayed is None or decayed(name)]
    off = [p for name, p in named if not (decayed is None or decayed(name))]
    groups = [{"params": on, "weight_decay": weight_decay}] + ([{"params": off, "weight_decay": 0.0}] if off else [])
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    elif optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    loss_fn = nn.CrossEntropyLoss()
    yt = torch.as_tensor(y, dtype=torch.long)
    losses = []
    first = order_fn(0)
    if min_steps:
        per_epoch = max(1, -(-len(first) // batch_size))
        epochs = max(epochs, -(-min_steps // per_epoch))
    module.train()
    bar = None
    if isinstance(progress, str):  # a description: an epoch bar on a terminal (stderr), else nothing
        import sys

        from tqdm import tqdm
        bar = tqdm(total=epochs, desc=progress, unit="epoch", disable=None, leave=False, file=sys.stderr)
    for epoch in range(epochs):
        order = first if epoch == 0 else order_fn(epoch)
        total = 0.0
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            opt.zero_grad()
            loss = loss_fn(forward(idx), yt[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / max(1, len(order)))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        elif progress is not None:
            progress(epoch, losses[-1])
    if bar is not None:
        bar.close()
    module.eval()
    return losses


def lstm_infer(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """``lstm(x)[0]`` for a batch-first, unidirectional LSTM in eval mode starting from zero
    states: the same operator (``torch._VF.lstm``) with the same arguments as
    :meth:`nn.LSTM.forward`, without its per-call checks and module-call machinery (a tenth of
    a batch-1 decision's LSTM time; the result is the same tensor, bit for bit)."""
    from torch import _VF
    p = lstm._parameters
    zeros = torch.zeros(lstm.num_layers, x.shape[0], lstm.hidden_size, dtype=x.dtype)
    return _VF.lstm(x, (zeros, zeros), [p[n] for n in lstm._flat_weights_names], lstm.bias, lstm.num_layers,
                    0.0, False, False, True)[0]


class TorchModel:
    """What the torch models share: temperature-scaled probabilities from ``logits``, and
    saving/loading the state dict with its metadata (kind, classes, config, normalisation,
    temperature). Subclasses add their own metadata and rebuild their network."""

    def predict_proba(self, inst):
        from classifier.models.calibrate import softmax
        z = self.logits(inst)
        return softmax(z, self.temperature) if len(z) else z

    def _save(self, path, transform: str, **extra) -> None:
        from classifier.models.base import write_model
        meta = dict(self.meta, kind=self.kind, classes=self.classes, config=self.config,
                    normalisation={"transform": transform, "mean": self.scaler.mean.tolist(),
                                   "std": self.scaler.std.tolist()},
                    temperature=self.temperature, **extra)
        write_model(path, state_to_numpy(self.net), meta)

    #: constructor arguments that are metadata fields of their own, not ``config`` settings
    _META_ARGS = ("numeric", "features")

    @classmethod
    def _read(cls, path) -> tuple[dict, dict]:
        """(tensors, metadata), refused before any tensor is read unless the metadata is sound
        and describes a network whose parameter shapes are those of the file's tensors."""
        from classifier.models.base import read_model
        return read_model(path, check=lambda meta, shapes: cls._check(str(path), meta, shapes))

    @classmethod
    def _from_meta(cls, path: str, meta: dict):
        """An untrained instance from checked metadata (subclasses check their own fields)."""
        raise NotImplementedError

    def _n_inputs(self) -> int:
        """How many features the normalisation covers."""
        raise NotImplementedError

    @classmethod
    def _check(cls, path: str, meta: dict, shapes: dict) -> None:
        import inspect

        from classifier.models.base import MetaChecker, ModelError
        chk = MetaChecker(path, meta)
        if meta.get("kind") != cls.kind:
            raise ModelError(f"{path}: a {str(meta.get('kind'))[:60]} model, not a {cls.kind} model")
        classes = chk.names("classes", 1, 1000)
        defaults = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty and n not in cls._META_ARGS}
        chk.settings("config", defaults)
        model = cls._from_meta(path, meta)
        norm = chk.get("normalisation")
        if not isinstance(norm, dict):
            chk.fail("normalisation", "an object with mean and std", norm)
        chk.numbers("normalisation.mean", norm.get("mean"), model._n_inputs())
        chk.numbers("normalisation.std", norm.get("std"), model._n_inputs(), positive=True)
        chk.number("temperature", meta.get("temperature", 1.0), 1e-6, 1e6)
        expected = model._shapes(path, len(classes))
        got = {k: shape for k, (_, shape) in shapes.items()}
        if got != expected:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
            what = (f"tensor {wrong[0]!r} is {list(got[wrong[0]])}, its metadata makes it {list(expected[wrong[0]])}"
                    if wrong else f"tensor {missing[0]!r} is missing" if missing
                    else f"tensor {extra[0][:60]!r} is not part of the model")
            raise ModelError(f"{path}: weights do not fit the model its metadata describes ({what})")

    def _shapes(self, path: str, n_classes: int) -> dict:
        """The parameter shapes of the network the settings describe, built on torch's ``meta``
        device (no memory is allocated, whatever the settings say)."""
        from classifier.models.base import ModelError
        try:
            with torch.device("meta"):
                self._build(n_classes)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None
        except (ValueError, TypeError, RuntimeError, ZeroDivisionError) as exc:
            raise ModelError(f"{path}: its metadata describes no network this version can build ({exc})") from None
        shapes = {k: tuple(v.shape) for k, v in self.net.state_dict().items()}
        self.net = None
        return shapes

    def _restore(self, path, tensors: dict, meta: dict) -> None:
        """Classes, normalisation, temperature and weights, after the constructor ran."""
        self.classes = meta["classes"]
        self.scaler = Standardiser(np.asarray(meta["normalisation"]["mean"], np.float32),
                                   np.asarray(meta["normalisation"]["std"], np.float32))
        self.temperature = float(meta.get("temperature", 1.0))
        self.meta = {k: v for k, v in meta.items() if k in ("training", "calibration", "window")}
        self._build(len(self.classes))
        load_numpy_state(self.net, tensors, str(path))
        self.net.eval()


def state_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_numpy_state(module: nn.Module, tensors: dict[str, np.ndarray], path: str) -> None:
    from classifier.models.base import ModelError
    state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the model its metadata describes ({exc})") from None
