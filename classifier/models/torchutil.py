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
               lr: float, weight_decay: float, batch_size: int, progress=None) -> list[float]:
    """Mini-batch training with cross-entropy. ``forward(idx)`` gives logits for instances
    ``idx``; ``order_fn(epoch)`` gives the epoch's instance order (with repetitions)."""
    if optimizer == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    loss_fn = nn.CrossEntropyLoss()
    yt = torch.as_tensor(y, dtype=torch.long)
    losses = []
    module.train()
    for epoch in range(epochs):
        order = order_fn(epoch)
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
        if progress is not None:
            progress(epoch, losses[-1])
    module.eval()
    return losses


def state_to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_numpy_state(module: nn.Module, tensors: dict[str, np.ndarray], path: str) -> None:
    from .base import ModelError
    state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the model its metadata describes ({exc})") from None
