"""The one list of models: the kinds a saved model file may hold (:data:`MODEL_CLASSES`,
:func:`load_model`), and the model names used on the command line with the instances each
one reads (:data:`SPECS`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from classifier.features.segments import FEATURE_NAMES, PAPER_FEATURES
from classifier.models.base import Model, ModelError, read_header
from classifier.models.baselines import SKLEARN_NAMES, SegmentCNN, SegmentLSTM, SklearnModel
from classifier.models.segment import SegmentLSTMCNN
from classifier.models.session import SessionNBA


#: Every model class saved as a ``.safetensors`` file, by its ``kind`` (scikit-learn baselines
#: are ``.skops`` files of :class:`SklearnModel`).
MODEL_CLASSES: dict[str, type[Model]] = {cls.kind: cls for cls in (SegmentLSTMCNN, SessionNBA, SegmentCNN, SegmentLSTM)}


def load_model(path: str | Path) -> Model:
    """Load any saved model (dispatching on its kind)."""
    path = str(path)
    if path.endswith(".skops"):
        return SklearnModel.load(path)
    _, meta = read_header(path)
    kind = meta.get("kind")
    if kind not in MODEL_CLASSES:
        raise ModelError(f"{path}: unknown model kind {kind!r} (known: {', '.join(MODEL_CLASSES)})")
    return MODEL_CLASSES[kind].load(path)


@dataclass(frozen=True)
class Settings:
    """Instance settings: segment interval T (s), window t, overlap, session sequence n."""

    interval: float = 300.0
    t: int = 6
    overlap: int = 3
    n: int = 16
    idle_timeout: float = 60.0
    epochs: int | None = None    # override every model's default epoch count

    def as_dict(self) -> dict:
        return dict(interval=self.interval, t=self.t, overlap=self.overlap, n=self.n, idle_timeout=self.idle_timeout)


@dataclass(frozen=True)
class Spec:
    name: str
    family: str                     # "segments" | "sessions" | "ccit"
    make: Callable[[Settings], Model]
    description: str


def _epochs(s: Settings, default: int) -> int:
    return s.epochs or default


def _segment(cls, features: list[str]) -> Callable[[Settings], Model]:
    """A segment model (LSTM-CNN or one of its halves) at the class's own training length
    (epochs and floor of optimiser steps); an explicit epoch count means exactly that many."""
    def make(s: Settings) -> Model:
        if s.epochs:
            return cls(features, t=s.t, epochs=s.epochs, min_steps=0)
        return cls(features, t=s.t)
    return make


def _specs() -> dict[str, Spec]:
    specs = [
        Spec("lstm-cnn", "segments", _segment(SegmentLSTMCNN, PAPER_FEATURES),
             "Bai et al. LSTM-CNN, the paper's six features"),
        Spec("lstm-cnn-all", "segments", _segment(SegmentLSTMCNN, FEATURE_NAMES),
             "Bai et al. LSTM-CNN, all segment features"),
        Spec("nba", "sessions", lambda s: SessionNBA(n=s.n, numeric=["interval"], epochs=_epochs(s, 30)),
             "Chen et al. LSTM+attention, destination pool + interval"),
        Spec("nba-vol", "sessions", lambda s: SessionNBA(n=s.n, epochs=_epochs(s, 30)),
             "Chen et al. LSTM+attention, pool + interval + volume features"),
        Spec("cnn", "segments", _segment(SegmentCNN, PAPER_FEATURES), "CNN alone (baseline)"),
        Spec("lstm", "segments", _segment(SegmentLSTM, PAPER_FEATURES), "LSTM alone (baseline)"),
    ]
    for name in SKLEARN_NAMES:
        family = "ccit" if name == "ccit" else "segments"
        specs.append(Spec(name, family, (lambda n: lambda s: SklearnModel(n, PAPER_FEATURES, t=s.t))(name),
                          "CCIT random forest (Sivanathan et al.)" if name == "ccit" else f"{name} (baseline)"))
    return {s.name: s for s in specs}


SPECS = _specs()
#: Bai et al.'s Table II order, then CCIT, then the papers' models.
BAI_TABLE = ["svm", "rf", "knn", "dt", "adaboost", "lda", "qda", "mlp", "cnn", "lstm", "lstm-cnn"]
ALL_MODELS = BAI_TABLE + ["lstm-cnn-all", "ccit", "nba", "nba-vol"]
