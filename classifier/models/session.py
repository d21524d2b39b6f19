"""Chen et al.: network behaviour analysis with an LSTM, attention and an MLP.

An instance is a sequence of up to ``n`` sessions. Each session is encoded as the embedding
of its destination's IP pool (dimension 3, as in the paper) concatenated with its normalised
begin-time interval and, optionally, volume features (log bytes and packets each way,
duration); normalisation uses training statistics only. An LSTM reads the sequence; an
attention module scores each output ``h_i`` (``v·tanh(W h_i)``), softmax-normalises the scores
over the real (unpadded) sessions into weights ``w_i`` and forms the context ``c = Σ w_i h_i``;
an MLP with softmax classifies ``c``.

Pool vocabulary: every pool seen in training; pools never seen map to the out-of-vocabulary
id. During training each pool is replaced by the OOV id with probability ``pool_dropout``,
so that the model learns what to make of destinations it has not seen (new devices).
Training balances devices by repeating the instances of devices with fewer (Chen et al.'s
Fig. 8 remark), never by synthesising data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classifier.features.instances import SESSION_NUMERIC, Instances
from classifier.models.base import Model, ModelError, repetition_index
from classifier.models.torchutil import Standardiser, TorchModel, lstm_infer, seed_everything, train_loop


class NBANet(nn.Module):
    def __init__(self, n_pools: int, n_num: int, n_classes: int, emb: int = 3, hidden: int = 64, attn: int = 32,
                 mlp: int = 64, dropout: float = 0.2):
        super().__init__()
        self.emb = nn.Embedding(n_pools, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb + n_num, hidden, batch_first=True)
        self.att = nn.Sequential(nn.Linear(hidden, attn), nn.Tanh(), nn.Linear(attn, 1, bias=False))
        self.mlp = nn.Sequential(nn.Linear(hidden, mlp), nn.ReLU(), nn.Dropout(dropout), nn.Linear(mlp, n_classes))

    def forward(self, pools: torch.Tensor, nums: torch.Tensor, lengths: torch.Tensor, with_attention: bool = False):
        x = torch.cat([self.emb(pools), nums], dim=-1)
        h, _ = self.lstm(x)                                   # (B, n, H); causal, so padding after is harmless
        scores = self.att(h).squeeze(-1)                      # (B, n)
        mask = torch.arange(h.shape[1])[None, :] < lengths[:, None]
        w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        c = (w.unsqueeze(-1) * h).sum(dim=1)
        logits = self.mlp(c)
        return (logits, w) if with_attention else logits

    def infer(self, pools: torch.Tensor, nums: torch.Tensor, lengths: torch.Tensor):
        """``forward(..., with_attention=True)`` in eval mode, its operators called as functions
        with the modules' own settings (no module-call machinery: at batch 1 that is a fifth of
        the pass); the same logits and weights, bit for bit. In training mode, :meth:`forward`
        itself."""
        if self.training:
            return self(pools, nums, lengths, with_attention=True)
        emb, (a1, _, a2), (m1, _, _, m2) = self.emb, self.att, self.mlp
        x = torch.cat([F.embedding(pools, emb.weight, emb.padding_idx, emb.max_norm, emb.norm_type,
                                   emb.scale_grad_by_freq, emb.sparse), nums], dim=-1)
        h = lstm_infer(self.lstm, x)
        scores = F.linear(torch.tanh(F.linear(h, a1.weight, a1.bias)), a2.weight, a2.bias).squeeze(-1)
        mask = torch.arange(h.shape[1])[None, :] < lengths[:, None]
        w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        c = (w.unsqueeze(-1) * h).sum(dim=1)
        return F.linear(torch.relu(F.linear(c, m1.weight, m1.bias)), m2.weight, m2.bias), w   # dropout: identity


class SessionNBA(TorchModel, Model):
    kind = "session-nba"
    inputs = ("pool", "num", "length")

    def __init__(self, n: int = 16, numeric: list[str] | None = None, emb: int = 3, hidden: int = 64,
                 attn: int = 32, mlp: int = 64, dropout: float = 0.2, pool_dropout: float = 0.1, lr: float = 0.003,
                 l2: float = 1e-5, optimizer: str = "adam", epochs: int = 30, batch_size: int = 64):
        super().__init__()
        self.numeric = list(SESSION_NUMERIC if numeric is None else numeric)
        self.config = dict(n=n, emb=emb, hidden=hidden, attn=attn, mlp=mlp, dropout=dropout,
                           pool_dropout=pool_dropout, lr=lr, l2=l2, optimizer=optimizer, epochs=epochs,
                           batch_size=batch_size)
        self.scaler = Standardiser()
        self.vocab = None
        self.temperature = 1.0
        self.net: NBANet | None = None

    def _prepare(self, inst: Instances):
        self.check_inputs(inst)
        n = self.config["n"]
        if inst.X["pool"].shape[1] != n:
            raise ModelError(f"{self.kind} model expects sequences of {n} sessions, got {inst.X['pool'].shape[1]}")
        num = inst.X["num"]
        if num.shape[2] != len(SESSION_NUMERIC):
            raise ModelError(f"{self.kind} model expects the {len(SESSION_NUMERIC)} numeric session inputs "
                             f"({', '.join(SESSION_NUMERIC)}), got {num.shape[2]}")
        num = num[:, :, [SESSION_NUMERIC.index(c) for c in self.numeric]]
        return inst.X["pool"], num, inst.X["length"]

    def _tensors(self, inst: Instances):
        pools, num, lengths = self._prepare(inst)
        ids = torch.from_numpy(self.vocab.index(pools))
        mask = (np.arange(pools.shape[1])[None, :] < lengths[:, None])[..., None]
        x = torch.from_numpy(np.where(mask, self.scaler(num), 0.0).astype(np.float32))
        return ids, x, torch.from_numpy(np.maximum(lengths, 1))

    def _build(self, n_classes: int) -> None:
        c = self.config
        self.net = NBANet(len(self.vocab), len(self.numeric), n_classes, c["emb"], c["hidden"], c["attn"], c["mlp"],
                          c["dropout"])

    def fit(self, inst, y, seed=0, balance=None, progress=None):
        from classifier.pools.vocabulary import PoolVocabulary
        seed_everything(seed)
        rng = np.random.default_rng(seed)
        self.classes = sorted(set(y.tolist()))
        yi = np.searchsorted(self.classes, y)
        pools, num, lengths = self._prepare(inst)
        valid = np.arange(pools.shape[1])[None, :] < lengths[:, None]
        self.vocab = PoolVocabulary.build(pools[valid])
        self.scaler.fit(num[valid]) if valid.any() else self.scaler.fit(np.zeros((1, num.shape[2]), np.float32))
        ids, x, lens = self._tensors(inst)
        self._build(len(self.classes))
        c = self.config
        oov = 1
        gen = torch.Generator().manual_seed(seed)

        def forward(idx):
            p = ids[idx]
            if c["pool_dropout"] > 0:
                drop = (torch.rand(p.shape, generator=gen) < c["pool_dropout"]) & (p > 0)
                p = torch.where(drop, torch.full_like(p, oov), p)
            return self.net(p, x[idx], lens[idx])

        keys = balance if balance is not None else y
        train_loop(self.net, forward, len(yi), yi, lambda epoch: repetition_index(keys, rng), c["epochs"],
                   c["optimizer"], c["lr"], c["l2"], c["batch_size"], progress)
        self.meta["training"] = {"instances": int(len(y)), "classes": {k: int(v) for k, v in
                                                                       zip(*np.unique(y, return_counts=True))}}
        return self

    def logits(self, inst: Instances, with_attention: bool = False):
        if self.net is None:
            raise ModelError("model is not trained")
        # A decision asks for one instance's probabilities and then its explanation (attention):
        # the same forward pass, run once (its last single instance is remembered).
        key = None
        if len(inst) == 1:
            key = (tuple(inst.X["pool"].ravel().tolist()), inst.X["num"].tobytes(),
                   np.asarray(inst.X["length"]).tobytes(), id(self.net))
            last = getattr(self, "_last_one", None)
            if last is not None and last[0] == key:
                return (last[1], last[2]) if with_attention else last[1]
        ids, x, lens = self._tensors(inst)
        out, att = [], []
        with torch.inference_mode():
            for b in range(0, len(ids), 1024):
                z, w = self.net.infer(ids[b:b + 1024], x[b:b + 1024], lens[b:b + 1024])
                out.append(z)
                att.append(w)
        if not out:
            z = np.zeros((0, len(self.classes)), np.float32)
            return (z, np.zeros((0, self.config["n"]), np.float32)) if with_attention else z
        z = torch.cat(out).numpy()
        w = torch.cat(att).numpy()
        if key is not None:
            self._last_one = (key, z, w)
        return (z, w) if with_attention else z

    def explain(self, inst: Instances, top: int = 3) -> list[list[tuple[int, str, float]]]:
        """For each instance, the sessions with the highest attention: (position, pool, weight)."""
        _, att = self.logits(inst, with_attention=True)
        out = []
        for i in range(len(att)):
            order = np.argsort(-att[i])[:top]
            out.append([(int(j), str(inst.X["pool"][i, j]), float(att[i, j])) for j in order
                        if j < inst.X["length"][i]])
        return out

    def save(self, path):
        self._save(path, "log1p", numeric=self.numeric, pools=self.vocab.to_json())

    def _n_inputs(self) -> int:
        return len(self.numeric)

    @classmethod
    def _from_meta(cls, path, meta):
        from classifier.models.base import MetaChecker
        from classifier.pools.vocabulary import PoolError, PoolVocabulary
        chk = MetaChecker(str(path), meta)
        numeric = chk.names("numeric", 0, len(SESSION_NUMERIC), allowed=SESSION_NUMERIC)
        pools = chk.get("pools")
        if not isinstance(pools, str):
            chk.fail("pools", "a pool vocabulary (JSON text)", pools)
        m = cls(numeric=numeric, **meta["config"])
        try:
            m.vocab = PoolVocabulary.from_json(pools, where=f"{path}: metadata 'pools'")
        except PoolError as exc:
            raise ModelError(str(exc)) from None
        return m

    @classmethod
    def load(cls, path):
        tensors, meta = cls._read(path)
        m = cls._from_meta(path, meta)
        m._restore(path, tensors, meta)
        return m
