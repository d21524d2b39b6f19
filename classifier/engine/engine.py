"""The decision engine: one device's packets -> a :class:`~classifier.engine.decision.Decision`.

It holds a session model (Chen et al.) and optionally a segment model (Bai et al.), both
category-level and calibrated on held-out training data. On each call it builds the
device's sessions (unless the caller hands over the table it built with :meth:`DecisionEngine.sessions`)
and segments from its packets with the same functions as the offline tools, then:

* evidence: ``min_sessions_provisional`` sessions, or ``t`` complete segments with traffic
  (a camera may hold one session for hours); with less, no decision yet (``None``);
* the session model reads the last ``n`` sessions; once the device has ``t`` complete
  segments with traffic, the segment model reads the last ``t``; the class is the top one of
  their calibrated probabilities averaged (``segment_weight``);
* the class is accepted when at least one model gives it a probability at or above that
  model's own open-set threshold (a model vouches for it); the decision's confidence is the
  highest such probability. When no model vouches: ``unknown`` once the evidence is enough to
  confirm (``min_sessions_confirmed`` sessions, or a full segment window), no decision before;
* an accepted class is *provisional*, and *confirmed* once the evidence is enough and the
  confidence reaches ``confirm_confidence``.

Explanations: the sessions the attention weighted most (with their pools) and, when the
segment model took part, the features whose occlusion moved its decision most.

A saved engine is a folder: ``engine.json`` (settings, thresholds, training summary) beside
``session.safetensors`` and, if present, ``segment.safetensors``. The shipped default lives
in ``classifier/models/default``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from classifier.capture.packets import Packets
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN, Decision
from classifier.errors import IotClassError
from classifier.features.devices import split_devices
from classifier.features.instances import SESSION_NUMERIC, Instances, session_numeric
from classifier.features.segments import FEATURE_NAMES, segment_features
from classifier.features.sessions import Sessions, session_table

DEFAULT_ENGINE = Path(__file__).resolve().parent.parent / "models" / "default"
ENGINE_FORMAT = "iotclass-engine"
ENGINE_VERSION = 1


class EngineError(IotClassError):
    pass


@dataclass
class EngineConfig:
    min_sessions_provisional: int = 3
    min_sessions_confirmed: int = 8
    confirm_confidence: float = 0.9
    threshold: float = 0.5            # open-set threshold of the session model (calibrated)
    segment_threshold: float = 0.5    # the segment model's
    segment_weight: float = 0.5       # weight of the segment model when it takes part
    interval: float = 300.0           # segment settings of the segment model
    t: int = 6
    n: int = 16                       # session sequence length of the session model
    idle_timeout: float = 60.0
    explain: bool = True


@dataclass
class DecisionEngine:
    session_model: object
    segment_model: object | None = None
    config: EngineConfig = field(default_factory=EngineConfig)
    info: dict = field(default_factory=dict)
    resolver: object | None = None

    @property
    def version(self) -> str:
        return self.info.get("version", "untrained")

    @property
    def classes(self) -> list[str]:
        return list(self.session_model.classes)

    # ------------------------------------------------------------------ deciding

    def _fill_pools(self, sess) -> None:
        """Pools from the offline database or the cache only: a decision never waits on RDAP.
        With an rdap/auto resolver, addresses not cached are looked up in the background and
        later decisions use the answers."""
        from classifier.pools.resolver import PoolResolver, fill_pools
        if self.resolver is None:
            self.resolver = PoolResolver(mode="offline")
        fill_pools(sess, resolver=self.resolver, blocking=False)

    def _session_instance(self, sess) -> Instances:
        n = self.config.n
        k = min(n, len(sess))
        last = sess.take(np.arange(len(sess) - k, len(sess)))
        pools = np.full((1, n), "", dtype=object)
        pools[0, :k] = last.pool
        num = np.zeros((1, n, len(SESSION_NUMERIC)), np.float32)
        num[0, :k] = session_numeric(last, SESSION_NUMERIC)
        return Instances({"pool": pools, "num": num, "length": np.array([k])}, np.zeros(1, np.int64),
                         np.array([int(last.start_ns[0])]))

    def _segment_instance(self, pk: Packets, view, now_ns: int) -> Instances | None:
        c = self.config
        seg = segment_features(pk, view, c.interval, end_ns=now_ns)
        rows = np.flatnonzero(seg.complete)
        if len(rows) < c.t:
            return None
        win = seg.values[rows[-c.t:]].astype(np.float32)
        if win[:, FEATURE_NAMES.index("n_total")].sum() == 0:
            return None
        return Instances({"seg": win[None]}, np.zeros(1, np.int64), np.array([int(seg.start_ns[rows[-c.t]])]))

    def _aligned(self, model, proba: np.ndarray) -> np.ndarray:
        """A model's probabilities in the session model's class order."""
        out = np.zeros(len(self.classes))
        for j, c in enumerate(model.classes):
            if c in self.classes:
                out[self.classes.index(c)] = proba[j]
        return out

    def sessions(self, pk: Packets, mac: int) -> Sessions:
        """Device ``mac``'s sessions as :meth:`decide` reads them (this engine's idle timeout),
        pools not filled yet: a caller that needs them too builds them once, fills their pools
        if it likes, and hands them to :meth:`decide`."""
        return session_table(pk, split_devices(pk, devices=[mac]), self.config.idle_timeout)

    def decide(self, pk: Packets, mac: int, now_ns: int | None = None,
               sessions: Sessions | None = None) -> Decision | None:
        """See :class:`~classifier.engine.decision.Engine`. ``sessions``: the device's sessions
        from :meth:`sessions` on the same packets (built here when not given); pools left
        empty are filled here."""
        c = self.config
        view = split_devices(pk, devices=[mac])
        if len(view) == 0:
            return None
        ts = pk.ts_ns[view.pkt]
        now = int(ts.max()) if now_ns is None else max(int(now_ns), int(ts.max()))
        sess = session_table(pk, view, c.idle_timeout) if sessions is None else sessions
        n_s = len(sess)
        # a full window of segments is evidence too (a camera may hold one session for hours)
        g_inst = self._segment_instance(pk, view, now) if self.segment_model is not None else None
        if n_s == 0 or (n_s < c.min_sessions_provisional and g_inst is None):
            return None
        if (sess.pool == "").any():
            self._fill_pools(sess)
        s_inst = self._session_instance(sess)
        votes = [(self.session_model.predict_proba(s_inst)[0], c.threshold)]
        used = [self.session_model.kind]
        if g_inst is not None:
            pg = self._aligned(self.segment_model, self.segment_model.predict_proba(g_inst)[0])
            votes.append((pg, c.segment_threshold))
            used.append(self.segment_model.kind)
        weights = [1.0] if len(votes) == 1 else [1 - c.segment_weight, c.segment_weight]
        p = sum(w * v for w, (v, _) in zip(weights, votes))
        k = int(p.argmax())
        # the class the models agree on most; accepted when a model vouches for it on its own
        # calibrated threshold (its probability is then the decision's confidence)
        threshold = min(thr for _, thr in votes)
        evidence = {"packets": int(len(view.pkt)), "sessions": n_s,
                    "segments": int((now - int(ts.min())) // int(c.interval * 1e9))}
        enough = n_s >= c.min_sessions_confirmed or g_inst is not None
        model = f"{'+'.join(used)}@{self.version}"
        if not any(float(v[k]) >= thr for v, thr in votes):
            if not enough:
                return None
            return Decision(UNKNOWN, float(p[k]), UNKNOWN, model,
                            f"top class {self.classes[k]} at {float(p[k]):.2f}: no model reaches its open-set "
                            f"threshold (lowest {threshold:.2f})", evidence)
        conf = max(float(v[k]) for v, thr in votes if float(v[k]) >= thr)
        stage = CONFIRMED if (enough and conf >= c.confirm_confidence) else PROVISIONAL
        explanation = self._explain(s_inst, g_inst) if c.explain else ""
        return Decision(self.classes[k], conf, stage, model, explanation, evidence)

    def _explain(self, s_inst: Instances, g_inst: Instances | None) -> str:
        parts = []
        top = self.session_model.explain(s_inst)[0]
        if top:
            parts.append("sessions: " + ", ".join(f"#{j + 1} {pool or '?'} ({w:.2f})" for j, pool, w in top))
        if g_inst is not None:
            feats = self.segment_model.explain(g_inst)[0]
            parts.append("segments: " + ", ".join(f"{f} ({d:+.2f})" for f, d in feats))
        return "; ".join(parts)

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.session_model.save(folder / "session.safetensors")
        if self.segment_model is not None:
            self.segment_model.save(folder / "segment.safetensors")
        doc = {"format": ENGINE_FORMAT, "format_version": ENGINE_VERSION, "config": asdict(self.config),
               "info": self.info, "segment_model": self.segment_model is not None}
        (folder / "engine.json").write_text(json.dumps(doc, indent=1, sort_keys=True))

    @classmethod
    def load(cls, folder: str | Path | None = None, resolver=None) -> "DecisionEngine":
        """The engine saved in ``folder``: engine.json is checked (types, ranges, agreement with
        the models) and each model file is checked before its weights are read; every problem
        is a one-line :class:`EngineError` or :class:`~classifier.models.base.ModelError` naming
        the file and the field."""
        from classifier.models.segment import SegmentLSTMCNN
        from classifier.models.session import SessionNBA
        folder = Path(folder) if folder else DEFAULT_ENGINE
        if folder.is_file() and folder.name == "engine.json":
            folder = folder.parent
        meta_path = folder / "engine.json"
        if not meta_path.exists():
            hint = " (train the default with `iotclass train`)" if folder == DEFAULT_ENGINE else ""
            raise EngineError(f"{folder}: no engine.json, not a saved engine{hint}")
        doc = _read_engine_json(meta_path)
        config = _engine_config(meta_path, doc)
        files = [folder / "session.safetensors"] + ([folder / "segment.safetensors"] if doc["segment_model"] else [])
        for f in files:
            if not f.exists():
                raise EngineError(f"{meta_path}: names {f.name}, which is missing")
        session = SessionNBA.load(files[0])
        segment = SegmentLSTMCNN.load(files[1]) if doc["segment_model"] else None
        if session.config["n"] != config.n:
            raise EngineError(f"{meta_path}: config 'n' is {config.n}, but {files[0].name} reads sequences of "
                              f"{session.config['n']} sessions")
        if segment is not None and segment.config["t"] != config.t:
            raise EngineError(f"{meta_path}: config 't' is {config.t}, but {files[1].name} reads windows of "
                              f"{segment.config['t']} segments")
        return cls(session, segment, config, doc.get("info", {}), resolver)


#: Largest engine.json read.
MAX_ENGINE_JSON_BYTES = 1 << 20
#: EngineConfig field -> (lowest, highest) allowed.
_CONFIG_RANGES = {
    "min_sessions_provisional": (1, 1_000_000), "min_sessions_confirmed": (1, 1_000_000),
    "confirm_confidence": (0.0, 1.0), "threshold": (0.0, 1.0), "segment_threshold": (0.0, 1.0),
    "segment_weight": (0.0, 1.0), "interval": (1e-3, 1e7), "t": (1, 1024), "n": (1, 4096),
    "idle_timeout": (1e-3, 1e7),
}


def _read_engine_json(path: Path) -> dict:
    from classifier.models.base import open_regular
    with open_regular(str(path), EngineError, "file") as fh:
        raw = fh.read(MAX_ENGINE_JSON_BYTES + 1)
    if len(raw) > MAX_ENGINE_JSON_BYTES:
        raise EngineError(f"{path}: larger than {MAX_ENGINE_JSON_BYTES} bytes, not an engine description")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EngineError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise EngineError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != ENGINE_FORMAT or doc.get("format_version") != ENGINE_VERSION:
        raise EngineError(f"{path}: engine format {str(doc.get('format'))[:40]} version "
                          f"{str(doc.get('format_version'))[:20]}; this version reads {ENGINE_FORMAT} version "
                          f"{ENGINE_VERSION}")
    if not isinstance(doc.get("segment_model", False), bool):
        raise EngineError(f"{path}: 'segment_model' must be true or false")
    doc.setdefault("segment_model", False)
    if not isinstance(doc.get("info", {}), dict):
        raise EngineError(f"{path}: 'info' must be an object")
    return doc


def _engine_config(path: Path, doc: dict) -> EngineConfig:
    """The engine's settings, each of its field's type and in its range (unknown keys, from a
    newer version, are left out)."""
    raw = doc.get("config", {})
    if not isinstance(raw, dict):
        raise EngineError(f"{path}: 'config' must be an object")
    out = {}
    for name, f in EngineConfig.__dataclass_fields__.items():
        if name not in raw:
            continue
        v, default = raw[name], f.default
        shown = json.dumps(v)[:40]
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise EngineError(f"{path}: config {name!r}: expected true or false, got {shown}")
        else:
            lo, hi = _CONFIG_RANGES[name]
            integer = isinstance(default, int)
            ok = isinstance(v, int) if integer else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok or not math.isfinite(v) or not lo <= v <= hi:
                kind = "an integer" if integer else "a number"
                raise EngineError(f"{path}: config {name!r}: expected {kind} from {lo:g} to {hi:g}, got {shown}")
            v = int(v) if integer else float(v)
        out[name] = v
    return EngineConfig(**out)


def load_engine(path: str | Path | None = None, resolver=None) -> DecisionEngine:
    """The engine saved at ``path`` (a folder or its engine.json); the shipped default if None."""
    return DecisionEngine.load(path, resolver)


def time_decisions(engine: DecisionEngine, pk: Packets, mac: int, repeat: int = 20) -> dict:
    """Milliseconds per decision on one device's packets (model inference alone, and the
    whole decision from packets)."""
    t0 = time.perf_counter()
    for _ in range(repeat):
        engine.decide(pk, mac)
    whole = (time.perf_counter() - t0) / repeat * 1e3
    view = split_devices(pk, devices=[mac])
    sess = session_table(pk, view, engine.config.idle_timeout)
    engine._fill_pools(sess)
    inst = engine._session_instance(sess)
    t0 = time.perf_counter()
    for _ in range(repeat):
        engine.session_model.predict_proba(inst)
    infer = (time.perf_counter() - t0) / repeat * 1e3
    return {"decision_ms": whole, "session_inference_ms": infer}
