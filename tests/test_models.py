"""The models: they learn (on generated traffic), persist without pickling, refuse the wrong
inputs and files, and are deterministic for a seed."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from classifier.evaluation.protocols import capture_folds, fit_predict, labels_of
from classifier.models.base import ModelError, read_model, write_model
from classifier.models.registry import SPECS, load_model


def split(data):
    f = capture_folds(data.streams, 3, 0)
    return f != 0, f == 0


_TRAINED: dict = {}


@pytest.fixture
def trained(synth_data):
    """Each model trained once (seed 0, two captures) and shared by this module's tests."""
    def get(name):
        if name not in _TRAINED:
            tr, te = split(synth_data)
            _TRAINED[name] = fit_predict(SPECS[name], synth_data, "category", tr, te, seed=0)
        return _TRAINED[name]
    return get


@pytest.mark.parametrize("name", ["nba", "nba-vol", "lstm-cnn-all", "rf", "ccit"])
def test_models_learn_generated_categories(trained, synth_data, name):
    m, model, _ = trained(name)
    # seven categories: chance is 1/7; these profiles differ in servers, volume and timing
    assert m["accuracy"] >= 0.8, m
    assert set(model.classes) == {s.category for s in synth_data.streams}


@pytest.mark.parametrize("name", ["svm", "knn", "dt", "adaboost", "lda", "qda", "mlp", "cnn", "lstm", "lstm-cnn"])
def test_every_baseline_trains_and_predicts(trained, name):
    m, model, test = trained(name)
    p = model.predict_proba(test)
    assert p.shape == (len(test), len(model.classes))
    assert np.allclose(p.sum(axis=1), 1.0)
    assert m["accuracy"] > 1 / 7  # better than chance on these easy profiles


@pytest.mark.parametrize("name,suffix", [("nba-vol", "safetensors"), ("lstm-cnn-all", "safetensors"),
                                         ("cnn", "safetensors"), ("rf", "skops")])
def test_save_load_roundtrip_gives_identical_probabilities(trained, tmp_path, name, suffix):
    _, model, test = trained(name)
    path = tmp_path / f"m.{suffix}"
    model.save(path)
    again = load_model(path)
    assert again.classes == model.classes
    assert np.allclose(again.predict_proba(test), model.predict_proba(test), atol=1e-6)


def test_training_is_deterministic_for_a_seed(trained, synth_data):
    tr, te = split(synth_data)
    _, a, test = trained("nba")
    _, b, _ = fit_predict(SPECS["nba"], synth_data, "category", tr, te, seed=0)
    assert np.array_equal(a.predict_proba(test), b.predict_proba(test))


def test_metadata_holds_what_the_model_needs(trained, tmp_path):
    _, model, _ = trained("nba-vol")
    model.save(tmp_path / "s.safetensors")
    _, meta = read_model(tmp_path / "s.safetensors")
    for key in ("classes", "numeric", "config", "normalisation", "pools", "training", "format_version", "kind"):
        assert key in meta
    vocab = json.loads(meta["pools"])
    assert vocab["oov_id"] == 1 and vocab["pad_id"] == 0 and len(vocab["pools"]) > 3


def test_wrong_version_kind_and_inputs_are_refused(trained, synth_data, tmp_path):
    from classifier.models.segment import SegmentLSTMCNN
    from classifier.models.session import SessionNBA
    _, model, _ = trained("nba")
    path = tmp_path / "s.safetensors"
    model.save(path)
    with pytest.raises(ModelError, match="not a segment-lstm-cnn model"):
        SegmentLSTMCNN.load(path)
    tensors, meta = read_model(path)
    meta["format_version"] = 99
    write_model(tmp_path / "future.safetensors", tensors, meta)
    with pytest.raises(ModelError, match="format version 99"):
        load_model(tmp_path / "future.safetensors")
    meta["format_version"] = 1
    meta["numeric"] = ["interval", "jitter"]
    write_model(tmp_path / "other.safetensors", tensors, meta)
    with pytest.raises(ModelError, match="jitter"):
        SessionNBA.load(tmp_path / "other.safetensors")
    segments = synth_data.instances("segments")
    with pytest.raises(ModelError, match="needs inputs"):
        model.predict_proba(segments)


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "was-unpickled"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelError, match="not a model file"):
        load_model(bad)
    assert not marker.exists()
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")


def test_skops_refuses_types_outside_sklearn(tmp_path):
    import skops.io as sio
    from classifier.models.baselines import SklearnModel
    path = tmp_path / "x.skops"
    sio.dump({"name": "rf", "estimator": SklearnModel("rf")}, str(path))  # a project class inside
    with pytest.raises(ModelError, match="refuses to load types outside"):
        SklearnModel.load(path)


def test_occlusion_and_attention_explanations(trained):
    _, seg, test = trained("lstm-cnn-all")
    ex = seg.explain(test.take(slice(0, 3)))
    assert len(ex) == 3 and all(len(e) == 3 for e in ex)
    assert all(f in seg.features for e in ex for f, _ in e)
    _, ses, stest = trained("nba-vol")
    ex = ses.explain(stest.take(slice(0, 3)))
    for e, length in zip(ex, stest.X["length"][:3]):
        assert all(0 <= j < length and 0 <= w <= 1 for j, _, w in e)


def test_scikit_learn_baselines_are_calibrated_for_the_open_set(synth_data, tmp_path):
    """fit_calibrated (training, ``iotclass evaluate openset``) works for the scikit-learn
    baselines too, as for the torch models: their log-probabilities are the logits a
    temperature scales, the calibrated probabilities are what predict_proba gives, and the
    temperature is saved with the model."""
    from classifier.evaluation.protocols import fit_calibrated
    name = "rf"
    tr, te = split(synth_data)
    model, threshold = fit_calibrated(SPECS[name], synth_data, "category", tr, seed=0)
    assert 0.0 <= threshold <= 0.99 and model.meta["calibration"]["instances"] > 0
    test = synth_data.instances(SPECS[name].family).take(te[synth_data.instances(SPECS[name].family).stream])
    p = model.predict_proba(test)
    assert np.allclose(p.sum(axis=1), 1.0)
    from classifier.models.calibrate import softmax
    assert np.allclose(p, softmax(model.logits(test), model.temperature), atol=1e-6)
    model.temperature = 2.0                          # as if calibrated so: saved and used again
    model.save(tmp_path / "m.skops")
    again = load_model(tmp_path / "m.skops")
    assert again.temperature == 2.0 and np.allclose(again.predict_proba(test), model.predict_proba(test))
