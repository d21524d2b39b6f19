"""Inference speed of the shipped engine: milliseconds per decision on one core.

For each device of a capture the engine decides once (warm-up), then ``repeat`` times; the
figures are the median over devices of: the session model's inference alone, the segment
model's inference alone (where a device has a full window), and the whole decision from the
device's packets (sessions, pools, segments, both models, explanation). The random-forest
baseline's inference on the same segment windows is measured in the same run, as a ratio.

``python -m benchmarks.models [CAPTURE]`` (default: a home capture from ../shared, else
a generated one).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import numpy as np


def _ms(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1e3


def run(capture: str, repeat: int = 50) -> dict:
    import torch
    torch.set_num_threads(1)
    from classifier.capture.decode import read_packets
    from classifier.features.devices import split_devices
    from classifier.engine.engine import load_engine
    from classifier.models.baselines import SklearnModel
    from classifier.features.sessions import session_table
    engine = load_engine()
    pk = read_packets(capture, warnings=[])
    view = split_devices(pk)
    whole, sess_ms, seg_ms, rf_ms = [], [], [], []
    windows, labels = [], []
    for mac in view.macs.tolist():
        if engine.decide(pk, mac) is None:
            continue
        whole.append(_ms(lambda: engine.decide(pk, mac), max(5, repeat // 10)))
        dv = split_devices(pk, devices=[mac])
        s = session_table(pk, dv, engine.config.idle_timeout)
        engine._fill_pools(s)
        inst = engine._session_instance(s)
        sess_ms.append(_ms(lambda: engine.session_model.predict_proba(inst), repeat))
        g = engine._segment_instance(pk, dv, int(pk.ts_ns.max())) if engine.segment_model else None
        if g is not None:
            seg_ms.append(_ms(lambda: engine.segment_model.predict_proba(g), repeat))
            windows.append(g)
            labels.append(engine.classes[int(engine.segment_model.predict_proba(g)[0].argmax())])
    if windows:
        from classifier.features.instances import Instances
        X = np.concatenate([w.X["seg"] for w in windows])
        inst = Instances({"seg": X}, np.zeros(len(X), np.int64), np.zeros(len(X), np.int64))
        rf = SklearnModel("rf", t=engine.config.t).fit(inst, np.asarray(labels, dtype=object))
        one = inst.take(slice(0, 1))
        rf_ms.append(_ms(lambda: rf.predict_proba(one), repeat))
    med = lambda xs: float(np.median(xs)) if xs else None  # noqa: E731
    r = {"capture": os.path.basename(capture), "devices": len(whole),
         "session_inference_ms": med(sess_ms), "segment_inference_ms": med(seg_ms),
         "decision_ms": med(whole), "rf_baseline_inference_ms": med(rf_ms)}
    if r["segment_inference_ms"] and r["rf_baseline_inference_ms"]:
        r["segment_vs_rf"] = r["segment_inference_ms"] / r["rf_baseline_inference_ms"]
    return r


def main() -> int:
    from classifier.shared import datasets_root
    if len(sys.argv) > 1:
        capture = sys.argv[1]
    elif datasets_root():
        capture = str(datasets_root() / "home" / "training_2023-5-26_1_13_9.pcapng.gz")
    else:
        from testing.synth import default_network, write_network_capture
        capture = os.path.join(tempfile.mkdtemp(), "synthetic.pcap")
        write_network_capture(capture, default_network(), 3600.0, seed=1)
    print(json.dumps(run(capture), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
