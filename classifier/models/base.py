"""The one interface every model has (fit / predict_proba / save / load) and safe persistence.

A saved model is a single ``.safetensors`` file: the tensors of its state dict, plus JSON
metadata in the file's header (format version, model kind, classes, feature names,
normalisation, pool vocabulary, window settings, training summary). Loading reads tensors
and JSON only — nothing is unpickled. scikit-learn baselines are saved with skops
(restricted to scikit-learn/numpy types) for the same reason.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from classifier import __version__
from classifier.features.instances import Instances
from classifier.errors import IotClassError

FORMAT = "iotclass-model"
FORMAT_VERSION = 1


class ModelError(IotClassError):
    pass


class Model(ABC):
    """A classifier of instances (segment windows, session sequences, CCIT rows)."""

    kind: str = ""
    #: the instance inputs this model reads (keys of Instances.X)
    inputs: tuple[str, ...] = ()

    def __init__(self):
        self.classes: list[str] = []
        self.meta: dict = {}

    @abstractmethod
    def fit(self, inst: Instances, y: np.ndarray, seed: int = 0, balance: np.ndarray | None = None) -> "Model":
        """Train on ``inst`` with labels ``y``; ``balance`` (e.g. device keys) makes each
        distinct value count about equally, by repeating instances of the rarer ones."""

    @abstractmethod
    def predict_proba(self, inst: Instances) -> np.ndarray:
        """Class probabilities, shape (len(inst), len(self.classes))."""

    def predict(self, inst: Instances) -> np.ndarray:
        p = self.predict_proba(inst)
        return np.asarray(self.classes, dtype=object)[p.argmax(axis=1)] if len(p) else np.zeros(0, dtype=object)

    def check_inputs(self, inst: Instances) -> None:
        missing = [k for k in self.inputs if k not in inst.X]
        if missing:
            raise ModelError(f"{self.kind} model needs inputs {', '.join(self.inputs)}; "
                             f"got {', '.join(inst.X) or 'none'}")

    @abstractmethod
    def save(self, path: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> "Model": ...


def repetition_index(keys: np.ndarray, rng: np.random.Generator, cap: int = 200) -> np.ndarray:
    """Instance indices where each distinct key is repeated up to about the same count.

    Chen et al. balance devices "by copying the subset of devices with fewer instances";
    each key's instances are repeated ``round(target / count)`` times, where ``target`` is the
    largest count capped at ``cap``. No instance is dropped and none is synthesised.
    """
    keys = np.asarray(keys)
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    target = min(int(counts.max()), cap)
    factor = np.maximum(1, np.round(target / counts)).astype(np.int64)
    idx = np.repeat(np.arange(len(keys)), factor[inv])
    rng.shuffle(idx)
    return idx


# --------------------------------------------------------------------------- persistence


def write_model(path: str | Path, tensors: dict, meta: dict) -> None:
    from safetensors.numpy import save_file
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta.setdefault("project_version", __version__)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(arrays, str(path), metadata={"iotclass": json.dumps(meta, sort_keys=True)})
    os.chmod(path, 0o644)  # safetensors writes 0600; models are shared read-only data


def read_model(path: str | Path) -> tuple[dict, dict]:
    """(tensors as numpy arrays, metadata) of a saved model, with its format checked."""
    from safetensors import safe_open
    path = str(path)
    try:
        with safe_open(path, framework="numpy") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on a bad file
        raise ModelError(f"{path}: not a model file ({exc})") from None
    if "iotclass" not in header:
        raise ModelError(f"{path}: a safetensors file, but not one of this project's models")
    meta = json.loads(header["iotclass"])
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: unknown model format {meta.get('format')!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {meta.get('format_version')}, this version of iotclass "
                         f"reads version {FORMAT_VERSION}; retrain it with `iotclass train`")
    return tensors, meta
