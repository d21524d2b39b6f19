"""Training the default engine (``iotclass train``) on every labelled capture given.

* The session model (Chen et al., with volume features) learns categories from every
  dataset: sequences of up to ``n`` sessions, plus each stream's first 3 and 8 sessions (what
  the controller sees early on).
* The segment model (Bai et al.) learns categories from the long captures only
  (T = 300 s, t = 6): set-up captures last about a minute, far less than one window.
* Each is calibrated (temperature, open-set threshold) on each device's latest 20% of
  instances, held out from its fitting.
* The identity voter (public knowledge and a token model, :mod:`classifier.identity`) learns
  from every stream's identity records, calibrated on vendor-held-out folds.
* ``DEMO_CAPTURE`` is left out of all training: the demo replays it, so what it shows is an
  engine that has not seen that capture (the same home's other captures are in training).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from classifier import __version__
from classifier.capture.labels import Dataset, load_datasets
from classifier.engine.engine import DEFAULT_ENGINE, DecisionEngine, EngineConfig
from classifier.evaluation.dataset import CaptureCache, session_sequences
from classifier.evaluation.protocols import Data, fit_calibrated, labels_of
from classifier.models.registry import SPECS, Settings

LONG = ("longterm", "home")
#: data selections whose captures are long enough for the segment model
DATA_LONG_OK = ("long", "home")
SESSION_MODEL = "nba-vol"
#: the capture the demo replays, never trained on (relative to the datasets folder)
DEMO_CAPTURE = "home/training_2023-5-26_1_13_9.pcapng.gz"
SEGMENT_MODEL = "lstm-cnn-all"


class EarlyData(Data):
    """Session instances with early prefixes added (training only)."""

    def instances(self, family):
        if family == "sessions" and family not in self._inst:
            self._inst[family] = session_sequences(self.streams, self.settings.n, prefixes=(3, 8))
        return super().instances(family)


def _fit_model(shared: tuple, job: tuple):
    """One of the engine's behaviour models fitted and calibrated, in whichever process runs it."""
    which, spec_name, train, seed, progress = job
    data = shared[0] if which == "session" else shared[1]
    return fit_calibrated(SPECS[spec_name], data, "category", train, seed, progress=progress)


def build_engine(data: Data, long: Data | None, train: np.ndarray, train_long: np.ndarray | None, seed: int = 0,
                 session_model: str = SESSION_MODEL, segment_model: str | None = SEGMENT_MODEL,
                 log=print, runner=None) -> DecisionEngine:
    """Fit and calibrate the engine's models on the streams selected by ``train`` (and
    ``train_long`` among ``long``'s streams, for the segment model). ``runner``
    (:class:`classifier.parallel.Runner`): the two models fitted side by side; the same
    engine either way (each fit is seeded; one torch thread each)."""
    from classifier.parallel import Runner
    runner = runner or Runner(1)
    here = runner.local
    jobs = [("session", session_model, train, seed, "session model" if here else None)]
    if segment_model and long is not None and train_long is not None and train_long.any():
        jobs.append(("segment", segment_model, train_long, seed, "segment model" if here else None))
    fitted = runner.map_shared(_fit_model, (data, long), jobs, desc="models", unit="model")
    sess, thr_s = next(fitted)
    log(f"session model: {sess.meta['training']['instances']} instances, classes {', '.join(sess.classes)}; "
        f"temperature {sess.temperature:.2f}, open-set threshold {thr_s:.2f}")
    seg, thr_g = None, thr_s
    for seg, thr_g in fitted:
        log(f"segment model: {seg.meta['training']['instances']} instances, classes {', '.join(seg.classes)}; "
            f"temperature {seg.temperature:.2f}, open-set threshold {thr_g:.2f}")
    s = data.settings
    config = EngineConfig(threshold=thr_s, segment_threshold=thr_g, interval=s.interval, t=s.t, n=s.n,
                          idle_timeout=s.idle_timeout)
    return DecisionEngine(sess, seg, config, {"session_model": session_model,
                                              "segment_model": segment_model if seg is not None else None})


def train_default(roots: list[str], out: str | Path | None = None, seed: int = 0, settings: Settings | None = None,
                  session_model: str = SESSION_MODEL, segment_model: str | None = SEGMENT_MODEL,
                  log=print, table_of=None, runner=None) -> DecisionEngine:
    """``table_of(loaded_capture)``: its identity records (default: the table the pipeline
    attaches to each decoded capture). ``runner``: where the models are fitted (build_engine)."""
    settings = settings or Settings(interval=300.0, t=6, overlap=3, n=16)
    t_start = time.time()
    ds = load_datasets(roots)
    left_out = [c.path for c in ds.captures if c.path.replace("\\", "/").endswith("/" + DEMO_CAPTURE)]
    ds.captures = [c for c in ds.captures if c.path not in left_out]
    cache = CaptureCache(ds)
    log(f"datasets: {', '.join(sorted({c.dataset for c in ds.captures}))}; {len(ds.captures)} captures"
        + (f"; left out for the demo: {DEMO_CAPTURE}" if left_out else ""))
    data = EarlyData("all", ds, settings, cache)
    log(f"features of {len(data.streams)} device streams in {data.build_seconds:.0f} s")
    long_ds = Dataset([c for c in ds.captures if c.dataset in LONG])
    long = Data("long", long_ds, settings, cache) if long_ds.captures else None
    engine = build_engine(data, long, np.ones(len(data.streams), bool),
                          np.ones(len(long.streams), bool) if long else None, seed, session_model, segment_model, log,
                          runner=runner)
    from classifier.evaluation.records import RecordSource
    from classifier.identity.training import train_identity
    records = RecordSource(data, table_of)
    n_records = sum(len(records(i)) for i in range(len(data.streams)))
    if n_records:
        engine.identity_model = train_identity(data.streams, records, np.ones(len(data.streams), bool), seed, log=log)
    else:
        log("identity voter: the captures carry no identity records; the engine has no identity voter")
    streams_per_cat: dict[str, int] = {}
    for lab in labels_of(data.streams, "category").tolist():
        streams_per_cat[lab] = streams_per_cat.get(lab, 0) + 1
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    engine.info.update({
        "version": f"{__version__}-{stamp}",
        "trained": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "datasets": sorted({c.dataset for c in ds.captures}),
        "captures": len(ds.captures),
        "devices": len(ds.devices()),
        "streams_per_category": streams_per_cat,
        "settings": settings.as_dict(), "seed": seed,
        "left_out_for_demo": DEMO_CAPTURE if left_out else None,
        "identity_records": n_records,
        "seconds": round(time.time() - t_start, 1),
    })
    target = Path(out) if out else DEFAULT_ENGINE
    engine.save(target)
    log(f"saved to {target} in {time.time() - t_start:.0f} s")
    return engine


def default_roots() -> list[str]:
    from classifier.shared import datasets_root
    root = datasets_root()
    return [str(root)] if root else []

