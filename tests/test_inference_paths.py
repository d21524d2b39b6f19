"""The decision's lean inference paths give what the general ones give, bit for bit, on real
inputs: each network's ``infer`` against its ``forward`` (module calls), and the pool
vocabulary's remembered ids against the ids it computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifier.capture.decode import read_packets
from classifier.engine.engine import load_engine
from classifier.features.devices import split_devices
from classifier.features.instances import Instances
from classifier.features.segments import segment_features
from classifier.features.sessions import session_table


def _inputs(engine, pk, every: int = 1):
    """The shipped models' inputs on ``pk``: every window of ``t`` consecutive segments of a
    device (batch of all, as tensors) and every ``every``-th prefix of each device's sessions
    (one instance each)."""
    seg, t = engine.segment_model, engine.config.t
    ft = segment_features(pk, split_devices(pk), engine.config.interval)
    X = ft.values.astype(np.float32)
    wins = [X[i:i + t] for i in range(len(X) - t + 1) if ft.macs[i] == ft.macs[i + t - 1]]
    W = np.stack(wins)
    x = torch.from_numpy(seg.scaler(seg._prepare(Instances({"seg": W}, np.zeros(len(W), np.int64),
                                                            np.zeros(len(W), np.int64)))))
    sessions = []
    for mac in split_devices(pk).macs.tolist():
        s = session_table(pk, split_devices(pk, devices=[mac]), engine.config.idle_timeout)
        if len(s) < engine.config.min_sessions_provisional:
            continue
        engine._fill_pools(s)
        for end in range(engine.config.min_sessions_provisional, len(s) + 1, every):
            sessions.append(engine._session_instance(s.take(slice(0, end))))
    return x, sessions


def _check(engine, pk, every: int = 1) -> tuple[int, int]:
    x, sessions = _inputs(engine, pk, every)
    seg, ses = engine.segment_model.net, engine.session_model.net
    with torch.inference_mode():
        for i in range(len(x)):                                  # batch 1, as a decision asks
            assert torch.equal(seg.infer(x[i:i + 1]), seg(x[i:i + 1])), f"segment window {i}"
        assert torch.equal(seg.infer(x), seg(x))                 # a batch (the occlusion explanation's)
        for j, inst in enumerate(sessions):
            ids, num, lens = engine.session_model._tensors(inst)
            z, w = ses.infer(ids, num, lens)
            z0, w0 = ses(ids, num, lens, with_attention=True)
            assert torch.equal(z, z0) and torch.equal(w, w0), f"session sequence {j}"
    return len(x), len(sessions)


def test_infer_is_forward_on_a_generated_capture(synth_capture):
    engine = load_engine()
    n_seg, n_ses = _check(engine, read_packets(str(synth_capture[0])))
    assert n_seg > 20 and n_ses > 50


@pytest.mark.shared
def test_infer_is_forward_on_a_home_capture(datasets):
    engine = load_engine()
    pk = read_packets(str(datasets / "home" / "training_2023-5-26_1_13_9.pcapng.gz"), warnings=[])
    n_seg, n_ses = _check(engine, pk, every=3)
    assert n_seg > 200 and n_ses > 100


def test_infer_in_training_mode_is_forward():
    engine = load_engine()
    seg = engine.segment_model.net
    x = torch.randn(3, engine.config.t, len(engine.segment_model.features))
    torch.manual_seed(0)
    seg.train()
    try:
        torch.manual_seed(1)
        a = seg.infer(x)
        torch.manual_seed(1)
        b = seg(x)
    finally:
        seg.eval()
    assert torch.equal(a, b)


def test_vocabulary_remembered_ids_are_its_ids():
    from classifier.pools.vocabulary import PoolVocabulary
    engine = load_engine()
    vocab = engine.session_model.vocab
    names = list(vocab.pools[:40]) + ["", "as15169-renamed-google", "org-never-seen", "unknown", "lan"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        arr = np.array(rng.choice(np.array(names, dtype=object), size=(2, 16)), dtype=object)
        fresh = PoolVocabulary(vocab.pools, merges=vocab.merges, version=vocab.version)   # nothing remembered
        first = fresh.index(arr)
        assert first.dtype == np.int64 and np.array_equal(first, [[fresh.id(str(n)) for n in row] for row in arr])
        assert np.array_equal(fresh.index(arr), first)                       # remembered
        assert np.array_equal(vocab.index(arr), first)
    # names that are not str take the general way
    odd = np.array([["lan", 5, None]], dtype=object)
    assert np.array_equal(vocab.index(odd), PoolVocabulary(vocab.pools, merges=vocab.merges).index(odd))


def test_aligned_probabilities_are_the_per_class_copy():
    from classifier.engine.engine import DecisionEngine
    rng = np.random.default_rng(1)
    engine_classes = ["camera", "plug", "hub", "speaker", "tv", "sensor"]
    for model_classes in (["plug", "camera"], ["tv", "other", "camera", "hub"], engine_classes[::-1], ["x", "y"],
                          ["plug", "camera", "plug"]):
        for dtype in (np.float32, np.float64):
            proba = rng.random(len(model_classes)).astype(dtype)
            want = np.zeros(len(engine_classes))
            for j, c in enumerate(model_classes):           # what the engine did class by class
                if c in engine_classes:
                    want[engine_classes.index(c)] = proba[j]
            got = DecisionEngine._aligned_to(model_classes, proba, list(engine_classes))
            assert got.dtype == want.dtype and np.array_equal(got, want)
