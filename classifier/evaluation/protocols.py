"""Evaluation protocols (``iotclass evaluate``). Splits are never by window of one capture.

1. ``unseen``: Bai et al.'s protocol. Per category, some device *groups* train and the
   others test (a group keeps units of one type, and captures carrying one MAC, on the same
   side); categories need at least two groups. Repeated over seeds (different assignments).
2. ``known``: Chen et al.'s protocol, 5-fold by capture file, device-type labels.
3. ``time``: train on the earlier captures, test on the later ones.
4. ``iot``: IoT versus non-IoT (binary), 5-fold by capture file.
5. ``sensitivity``: Bai et al.'s Figs. 8–10 under the unseen-device protocol: accuracy
   against the segment interval T, the window size t, and the share of training devices.
6. ``openset``: each category left out of training in turn; a calibrated threshold (from
   training data only) must turn its devices into ``unknown``.

Metrics are per instance (segment window, session sequence or CCIT window) as in the papers,
plus per *stream* (one device in one capture: the mean of its instances' probabilities),
which is what the controller decides on. Output: tables on the terminal, ``results.json``
and PNG plots in the output folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from classifier.capture.labels import Dataset, load_datasets
from classifier.evaluation.dataset import CaptureCache, Stream, build_streams, ccit_windows, segment_windows, session_sequences
from classifier.features.instances import Instances
from classifier.models.calibrate import fit_temperature, open_set_threshold, softmax
from classifier.models.registry import SPECS, Settings, Spec

DATA = {
    "all": None,                      # every dataset found
    "sentinel": ("iot-sentinel",),
    "long": ("longterm", "home"),
    "home": ("home",),
}
#: Set-up captures last about a minute: 10-second segments there; 5 minutes elsewhere.
DEFAULT_SETTINGS = {
    "sentinel": Settings(interval=10.0, t=6, overlap=3, n=16),
    "long": Settings(interval=300.0, t=6, overlap=3, n=16),
    "home": Settings(interval=300.0, t=6, overlap=3, n=16),
    "all": Settings(interval=300.0, t=6, overlap=3, n=16),
}
LEVELS = {"unseen": "category", "known": "type", "time": "type", "iot": "iot", "openset": "category"}


# --------------------------------------------------------------------------- data


class Data:
    """The streams of a data selection at given settings, and their instances per family."""

    def __init__(self, name: str, dataset: Dataset, settings: Settings, cache: CaptureCache | None = None):
        self.name = name
        self.dataset = dataset
        self.settings = settings
        self.cache = cache or CaptureCache(dataset)
        t0 = time.time()
        self.streams: list[Stream] = build_streams(dataset, settings.interval, settings.idle_timeout,
                                                   ccit_window=settings.interval * settings.t, cache=self.cache)
        self.build_seconds = time.time() - t0
        self._inst: dict[str, Instances] = {}

    def with_settings(self, settings: Settings) -> "Data":
        return Data(self.name, self.dataset, settings, self.cache)

    def instances(self, family: str) -> Instances:
        if family not in self._inst:
            s = self.settings
            if family == "segments":
                inst = segment_windows(self.streams, s.t, s.overlap)
            elif family == "sessions":
                inst = session_sequences(self.streams, s.n)
            elif family == "ccit":
                inst = ccit_windows(self.streams)
            else:
                raise ValueError(f"unknown instance family {family!r}")
            self._inst[family] = inst
        return self._inst[family]


def load_data(name: str, roots: list[str], settings: Settings | None = None) -> Data:
    if name not in DATA:
        raise ValueError(f"unknown data selection {name!r}; known: {', '.join(DATA)}")
    ds = load_datasets(roots)
    if DATA[name] is not None:
        ds.captures = [c for c in ds.captures if c.dataset in DATA[name]]
    if not ds.captures:
        raise ValueError(f"no captures of {', '.join(DATA[name] or ['any dataset'])} under "
                         f"{', '.join(map(str, roots))}")
    return Data(name, ds, settings or DEFAULT_SETTINGS[name])


def labels_of(streams: list[Stream], level: str) -> np.ndarray:
    if level == "iot":
        return np.array(["non-iot" if s.category == "non-iot" else "iot" for s in streams], dtype=object)
    return np.array([s.label(level) for s in streams], dtype=object)


# --------------------------------------------------------------------------- splits (per stream)


def unseen_split(streams: list[Stream], seed: int, share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per category, ``share`` of its device groups (at least one, leaving at least one) train."""
    rng = np.random.default_rng(seed)
    train = np.zeros(len(streams), bool)
    test = np.zeros(len(streams), bool)
    by_cat: dict[str, list[str]] = {}
    for s in streams:
        by_cat.setdefault(s.category, [])
        if s.group not in by_cat[s.category]:
            by_cat[s.category].append(s.group)
    chosen: set[str] = set()
    usable: set[str] = set()
    for cat, groups in sorted(by_cat.items()):
        if len(groups) < 2:
            continue
        groups = sorted(groups)
        k = min(len(groups) - 1, max(1, int(round(len(groups) * share - 1e-9))))
        order = rng.permutation(len(groups))
        chosen |= {groups[i] for i in order[:k]}
        usable |= set(groups)
    for i, s in enumerate(streams):
        if s.group in usable:
            train[i] = s.group in chosen
            test[i] = s.group not in chosen
    return train, test


def capture_folds(streams: list[Stream], k: int, seed: int) -> np.ndarray:
    """Fold number per stream: capture files dealt round-robin into ``k`` folds, within strata
    of captures holding the same labelled devices (so each device's captures spread out)."""
    rng = np.random.default_rng(seed)
    strata: dict[tuple, list[str]] = {}
    devices_of: dict[str, set] = {}
    for s in streams:
        devices_of.setdefault(s.capture, set()).add(s.device)
    for cap, devs in devices_of.items():
        strata.setdefault(tuple(sorted(devs)), []).append(cap)
    fold_of: dict[str, int] = {}
    offset = 0
    for key in sorted(strata):
        caps = sorted(strata[key])
        for j, i in enumerate(rng.permutation(len(caps))):
            fold_of[caps[i]] = (offset + j) % k
        offset += len(caps)
    return np.array([fold_of[s.capture] for s in streams])


def time_split(streams: list[Stream], share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The earliest ``share`` of capture files (by start time) train, the rest test."""
    start: dict[str, int] = {}
    for s in streams:
        start[s.capture] = min(start.get(s.capture, s.t0_ns), s.t0_ns)
    caps = sorted(start, key=lambda c: (start[c], c))
    n_train = max(1, min(len(caps) - 1, int(round(len(caps) * share))))
    train_caps = set(caps[:n_train])
    train = np.array([s.capture in train_caps for s in streams])
    return train, ~train


# --------------------------------------------------------------------------- metrics


def metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str], stream: np.ndarray) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    labels = sorted(set(y_true.tolist()) | set(pred.tolist()))
    p, r, f, sup = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=0)
    true_labels = sorted(set(y_true.tolist()))
    _, _, f_true, _ = precision_recall_fscore_support(y_true, pred, labels=true_labels, zero_division=0)
    # per stream: the mean probability over the stream's instances
    st_true, st_pred = [], []
    for sid in np.unique(stream):
        m = stream == sid
        st_true.append(y_true[m][0])
        st_pred.append(classes[int(proba[m].mean(axis=0).argmax())])
    return {
        "instances": int(len(y_true)),
        "accuracy": float((pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(np.mean(f_true)) if len(f_true) else 0.0,
        "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(sup[i])} for i, lab in enumerate(labels)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, pred, labels=labels).tolist()},
        "streams": int(len(st_true)),
        "stream_accuracy": float(np.mean(np.array(st_true) == np.array(st_pred))) if st_true else 0.0,
    }


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    model: str
    seed: int
    fold: int | None
    metrics: dict
    seconds: float
    extra: dict = field(default_factory=dict)


def fit_predict(spec: Spec, data: Data, level: str, train_streams: np.ndarray, test_streams: np.ndarray,
                seed: int) -> tuple[dict, object, Instances]:
    """Train ``spec`` on the instances of the training streams, evaluate on the test ones."""
    inst = data.instances(spec.family)
    y_stream = labels_of(data.streams, level)
    y = y_stream[inst.stream] if len(inst) else np.zeros(0, dtype=object)
    tr = train_streams[inst.stream]
    te = test_streams[inst.stream]
    if not tr.any() or not te.any():
        raise ValueError(f"{spec.name}: no {'training' if not tr.any() else 'test'} instances in this split")
    model = spec.make(data.settings)
    balance = inst.key("device")[tr]
    model.fit(inst.take(tr), y[tr], seed=seed, balance=balance)
    test = inst.take(te)
    proba = model.predict_proba(test)
    return metrics(y[te], proba, model.classes, inst.stream[te]), model, test


def _summary(runs: list[Run]) -> dict:
    out: dict[str, dict] = {}
    for name in dict.fromkeys(r.model for r in runs):
        rs = [r for r in runs if r.model == name]
        acc = [r.metrics["accuracy"] for r in rs]
        out[name] = {
            "runs": len(rs),
            "accuracy_mean": float(np.mean(acc)), "accuracy_best": float(np.max(acc)),
            "accuracy_std": float(np.std(acc)),
            "macro_f1_mean": float(np.mean([r.metrics["macro_f1"] for r in rs])),
            "stream_accuracy_mean": float(np.mean([r.metrics["stream_accuracy"] for r in rs])),
            "train_seconds_mean": float(np.mean([r.seconds for r in rs])),
        }
    return out


def pooled_per_class(runs: list[Run]) -> dict[str, dict]:
    """Per model, per class precision/recall/F1 pooled over folds (from summed confusions)."""
    out = {}
    for name in dict.fromkeys(r.model for r in runs):
        labels = sorted({lab for r in runs if r.model == name for lab in r.metrics["confusion"]["labels"]})
        cm = np.zeros((len(labels), len(labels)), np.int64)
        for r in runs:
            if r.model != name:
                continue
            ls = r.metrics["confusion"]["labels"]
            ix = [labels.index(x) for x in ls]
            cm[np.ix_(ix, ix)] += np.asarray(r.metrics["confusion"]["matrix"], np.int64)
        tp = np.diag(cm).astype(float)
        prec = np.divide(tp, cm.sum(axis=0), out=np.zeros_like(tp), where=cm.sum(axis=0) > 0)
        rec = np.divide(tp, cm.sum(axis=1), out=np.zeros_like(tp), where=cm.sum(axis=1) > 0)
        f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
        out[name] = {"labels": labels, "precision": prec.tolist(), "recall": rec.tolist(), "f1": f1.tolist(),
                     "support": cm.sum(axis=1).tolist(), "accuracy": float(tp.sum() / max(1, cm.sum())),
                     "confusion": cm.tolist()}
    return out


def _fit_run(data: Data, job: tuple) -> tuple:
    """One run of :func:`run_protocol` (a model on a split), in whichever process runs it:
    (metrics, seconds), or (None, why) when the split leaves it nothing to train or test on."""
    name, level, tr, te, s = job
    t0 = time.time()
    try:
        m, _, _ = fit_predict(SPECS[name], data, level, tr, te, s)
    except ValueError as exc:
        return None, str(exc)
    return m, time.time() - t0


def run_protocol(protocol: str, data: Data, models: list[str], seeds: int = 5, folds: int = 5, seed: int = 0,
                 share: float = 0.5, log=print, runner=None) -> dict:
    """Run one of unseen / known / time / iot on ``data`` for each model. ``runner``
    (:class:`classifier.parallel.Runner`): where the runs (a model on a split) go; the result
    is the same wherever they ran (each run is seeded; one torch thread each)."""
    from classifier.parallel import Runner
    level = LEVELS[protocol]
    jobs = []
    for name in models:
        if protocol == "unseen":
            splits = [(seed + k, None, *unseen_split(data.streams, seed + k, share)) for k in range(seeds)]
        elif protocol in ("known", "iot"):
            f = capture_folds(data.streams, folds, seed)
            splits = [(seed, k, f != k, f == k) for k in range(folds)]
        elif protocol == "time":
            splits = [(seed, None, *time_split(data.streams))]
        else:
            raise ValueError(f"unknown protocol {protocol!r}")
        jobs += [(name, s, fold, tr, te) for s, fold, tr, te in splits]
    for family in dict.fromkeys(SPECS[name].family for name in models):
        try:
            data.instances(family)              # built once, here: the workers inherit them
        except ValueError:
            pass                                # said by each run of that family
    runs: list[Run] = []
    runner = runner or Runner(1)
    done = runner.map_shared(_fit_run, data, [(name, level, tr, te, s) for name, s, _, tr, te in jobs], desc="runs")
    for (name, s, fold, _, _), (m, seconds) in zip(jobs, done):
        if m is None:
            log(f"  {name}: skipped ({seconds})")
            continue
        runs.append(Run(name, s, fold, m, seconds))
        log(f"  {name:13s} seed {s} fold {fold if fold is not None else '-'}: accuracy {m['accuracy']:.3f} "
            f"macro-F1 {m['macro_f1']:.3f} per-stream {m['stream_accuracy']:.3f} ({seconds:.0f} s)")
    return {"protocol": protocol, "data": data.name, "level": level, "settings": data.settings.as_dict(),
            "seeds": seeds, "folds": folds, "seed": seed, "share": share,
            "runs": [r.__dict__ for r in runs], "summary": _summary(runs), "per_class": pooled_per_class(runs)}


# --------------------------------------------------------------------------- calibration / open set


def holdout_latest(inst: Instances, mask: np.ndarray, share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Split the instances in ``mask`` into fit / calibration parts: each device's latest
    ``share`` of instances (by time) calibrate. Training data only."""
    fit = mask.copy()
    cal = np.zeros_like(mask)
    dev = inst.key("device")
    for d in np.unique(dev[mask]):
        idx = np.flatnonzero(mask & (dev == d))
        if len(idx) < 5:
            continue
        order = idx[np.argsort(inst.start_ns[idx], kind="stable")]
        k = max(1, int(round(len(order) * share)))
        cal[order[-k:]] = True
        fit[order[-k:]] = False
    return fit, cal


def fit_calibrated(spec: Spec, data: Data, level: str, train_streams: np.ndarray, seed: int,
                   reject_rate: float = 0.05, progress=None):
    """Train on most of the training instances; fit the temperature and the open-set
    threshold on each device's latest 20% (held out from fitting)."""
    inst = data.instances(spec.family)
    y = labels_of(data.streams, level)[inst.stream]
    fit, cal = holdout_latest(inst, train_streams[inst.stream])
    if not fit.any():
        raise ValueError(f"{spec.name}: no training instances in this split")
    model = spec.make(data.settings)
    model.fit(inst.take(fit), y[fit], seed=seed, balance=inst.key("device")[fit], progress=progress)
    known = cal & np.isin(y, model.classes)
    z = model.logits(inst.take(known))
    yi = np.searchsorted(model.classes, y[known])
    model.temperature = fit_temperature(z, yi)
    threshold = open_set_threshold(softmax(z, model.temperature), yi, reject_rate)
    model.meta["calibration"] = {"temperature": model.temperature, "threshold": threshold,
                                 "reject_rate": reject_rate, "instances": int(known.sum())}
    return model, threshold


def run_openset(data: Data, models: list[str], seed: int = 0, log=print) -> dict:
    """Leave each category out in turn: the share of its instances accepted (false accepts);
    plus, on an unseen-device split, acceptance and accuracy among accepted of unseen
    devices of known categories."""
    out: dict = {"protocol": "openset", "data": data.name, "settings": data.settings.as_dict(), "models": {}}
    cats = sorted({s.category for s in data.streams})
    for name in models:
        spec = SPECS[name]
        res: dict = {"left_out": {}}
        for cat in cats:
            train = np.array([s.category != cat for s in data.streams])
            if len({s.category for s in data.streams if s.category != cat}) < 2:
                continue
            model, thr = fit_calibrated(spec, data, "category", train, seed)
            inst = data.instances(spec.family)
            te = ~train[inst.stream]
            p = model.predict_proba(inst.take(te))
            far = float((p.max(axis=1) >= thr).mean()) if len(p) else 0.0
            res["left_out"][cat] = {"false_accept_rate": far, "instances": int(te.sum()), "threshold": thr}
            log(f"  {name}: {cat} left out: false-accept rate {far:.3f} ({int(te.sum())} instances)")
        tr, te_streams = unseen_split(data.streams, seed)
        res["unseen_known_categories"] = None
        if tr.any() and te_streams.any():
            model, thr = fit_calibrated(spec, data, "category", tr, seed)
            inst = data.instances(spec.family)
            te = te_streams[inst.stream]
            y = labels_of(data.streams, "category")[inst.stream][te]
            p = model.predict_proba(inst.take(te))
            acc_mask = p.max(axis=1) >= thr
            pred = np.asarray(model.classes, dtype=object)[p.argmax(axis=1)]
            res["unseen_known_categories"] = {
                "accepted_share": float(acc_mask.mean()) if len(p) else 0.0,
                "accuracy_on_accepted": float((pred[acc_mask] == y[acc_mask]).mean()) if acc_mask.any() else 0.0,
                "accuracy_all": float((pred == y).mean()) if len(p) else 0.0, "threshold": thr}
        fars = [v["false_accept_rate"] for v in res["left_out"].values()]
        res["false_accept_rate_mean"] = float(np.mean(fars)) if fars else None
        out["models"][name] = res
        unseen = res["unseen_known_categories"]
        log(f"  {name}: mean false-accept rate {res['false_accept_rate_mean']:.3f}; unseen devices of known "
            + (f"categories: accepted {unseen['accepted_share']:.3f}, accuracy on accepted "
               f"{unseen['accuracy_on_accepted']:.3f}" if unseen is not None
               else "categories: none (no category has two device groups to split)"))
    return out


# --------------------------------------------------------------------------- sensitivity


SENS_INTERVALS = (60.0, 120.0, 300.0, 600.0, 900.0)
SENS_WINDOWS = (2, 4, 6, 8, 10, 12)
SENS_SHARES = (0.25, 0.5, 0.75)


def run_sensitivity(data: Data, model: str = "lstm-cnn", seeds: int = 5, seed: int = 0, log=print,
                    intervals=SENS_INTERVALS, windows=SENS_WINDOWS, shares=SENS_SHARES) -> dict:
    spec = SPECS[model]
    base = data.settings
    curves: dict[str, list] = {"interval": [], "window": [], "share": []}

    def point(d: Data, share: float) -> dict:
        accs = []
        for k in range(seeds):
            tr, te = unseen_split(d.streams, seed + k, share)
            m, _, _ = fit_predict(spec, d, "category", tr, te, seed + k)
            accs.append(m["accuracy"])
        return {"accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "runs": accs}

    for T in intervals:
        d = data.with_settings(replace(base, interval=T))
        r = point(d, 0.5)
        curves["interval"].append({"interval": T, **r})
        log(f"  T = {T / 60:g} min: accuracy {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}")
    d300 = data if base.interval == 300.0 else data.with_settings(replace(base, interval=300.0))
    for t in windows:
        d = d300.with_settings(replace(d300.settings, t=t, overlap=t // 2))
        r = point(d, 0.5)
        curves["window"].append({"t": t, **r})
        log(f"  t = {t}: accuracy {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}")
    for share in shares:
        r = point(d300, share)
        curves["share"].append({"share": share, **r})
        log(f"  training share {share:.0%}: accuracy {r['accuracy_mean']:.3f} ± {r['accuracy_std']:.3f}")
    return {"protocol": "sensitivity", "data": data.name, "model": model, "seeds": seeds, "curves": curves}


# --------------------------------------------------------------------------- output


def short(label: str, width: int = 34) -> str:
    label = label.split("/", 1)[-1] if "/" in label else label
    return label if len(label) <= width else label[: width - 1] + "…"


def format_summary(result: dict) -> str:
    lines = [f"{result['protocol']} on {result['data']} ({result.get('level', '')} labels, "
             f"settings {result.get('settings')})",
             f"{'model':14s} {'runs':>4s} {'acc mean':>9s} {'acc best':>9s} {'macro-F1':>9s} {'per-stream':>10s}"]
    for name, s in result["summary"].items():
        lines.append(f"{name:14s} {s['runs']:4d} {s['accuracy_mean']:9.3f} {s['accuracy_best']:9.3f} "
                     f"{s['macro_f1_mean']:9.3f} {s['stream_accuracy_mean']:10.3f}")
    return "\n".join(lines)


def format_per_class(result: dict, models: list[str]) -> str:
    """Chen et al.'s Table 4 layout: one row per class, Prec/Rec/F1 per model, then accuracy."""
    pc = result["per_class"]
    models = [m for m in models if m in pc]
    if not models:
        return ""
    labels = sorted({lab for m in models for lab in pc[m]["labels"]})
    head = f"{'ID':>3s} {'class':34s} " + " ".join(f"{m[:20]:^20s}" for m in models)
    sub = " " * 39 + " ".join(f"{'Prec':>6s} {'Rec':>6s} {'F1':>6s}" for _ in models)
    lines = [head, sub]
    for i, lab in enumerate(labels):
        cells = []
        for m in models:
            d = pc[m]
            if lab in d["labels"]:
                j = d["labels"].index(lab)
                cells.append(f"{d['precision'][j]:6.4f} {d['recall'][j]:6.4f} {d['f1'][j]:6.4f}")
            else:
                cells.append(f"{'-':>6s} {'-':>6s} {'-':>6s}")
        lines.append(f"{i:3d} {short(lab):34s} " + " ".join(cells))
    lines.append(f"{'':3s} {'Accuracy':34s} " + " ".join(f"{pc[m]['accuracy']:20.4f}" for m in models))
    return "\n".join(lines)


def plot_confusion(result: dict, model: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = result["per_class"][model]
    cm = np.asarray(d["confusion"], float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(d["labels"])
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * n + 3), max(4, 0.35 * n + 2)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [short(x, 24) for x in d["labels"]], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [short(x, 24) for x in d["labels"]], fontsize=7)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{model}: {result['protocol']} on {result['data']} (accuracy {d['accuracy']:.3f})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sensitivity(result: dict, folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = []
    for key, xkey, xlabel, scale in [("interval", "interval", "segment interval T (min)", 1 / 60),
                                     ("window", "t", "window size t (segments)", 1),
                                     ("share", "share", "share of training devices (%)", 100)]:
        pts = result["curves"].get(key) or []
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        xs = [p[xkey] * scale for p in pts]
        ax.errorbar(xs, [p["accuracy_mean"] for p in pts], yerr=[p["accuracy_std"] for p in pts], marker="o",
                    capsize=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (unseen devices)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_title(f"{result['model']} on {result['data']}", fontsize=9)
        fig.tight_layout()
        path = folder / f"sensitivity-{key}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        out.append(path)
    return out


def save_result(result: dict, folder: str | os.PathLike, name: str) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    return path
