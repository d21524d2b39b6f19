"""Model inputs: :class:`Instances`, and the numeric inputs of a session.

What every model reads and the engine builds: named input arrays with one row per instance
(a window of segments, a sequence of sessions, a CCIT window), the stream each instance comes
from and its start time. Offline, the streams are labelled device streams
(:class:`classifier.evaluation.dataset.Stream`), which give the labels and split keys; the
engine builds instances of one device with no streams at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from classifier.features.sessions import Sessions


@dataclass
class Instances:
    """Model inputs with their labels and split keys (one row per instance)."""

    X: dict[str, np.ndarray]          # named input arrays, first axis = instance
    stream: np.ndarray                # index into the streams list
    start_ns: np.ndarray              # time of the instance's first segment/session
    #: the streams ``stream`` indexes: objects with ``label(level)`` and the split keys
    #: (``device``, ``capture``, ...) as attributes
    streams: list = field(repr=False, default_factory=list)

    def __len__(self) -> int:
        return len(self.stream)

    def labels(self, level: str) -> np.ndarray:
        names = np.array([s.label(level) for s in self.streams], dtype=object)
        return names[self.stream] if len(self.stream) else np.zeros(0, dtype=object)

    def key(self, what: str) -> np.ndarray:
        vals = np.array([getattr(s, what) for s in self.streams], dtype=object)
        return vals[self.stream] if len(self.stream) else np.zeros(0, dtype=object)

    def take(self, index) -> "Instances":
        return Instances({k: v[index] for k, v in self.X.items()}, self.stream[index], self.start_ns[index],
                         self.streams)


#: Per-session numeric inputs: the begin-time interval (Chen et al.) and volume features.
SESSION_NUMERIC = ["interval", "bytes_out", "bytes_in", "packets_out", "packets_in", "duration"]


def session_numeric(s: Sessions, names: list[str]) -> np.ndarray:
    """The raw numeric session inputs, log-scaled (normalised later from training data)."""
    cols = [np.log1p(np.maximum(getattr(s, n).astype(np.float64), 0.0)) for n in names]
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(s), 0), np.float32)
