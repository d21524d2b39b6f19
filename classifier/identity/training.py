"""Training the identity voter on training devices, calibrated on vendor-held-out folds.

An *example* is one device stream's identity records up to some time: the whole stream, and
its first ``PREFIX_SECONDS`` (what the controller holds early on). Each device weighs the same
in total, however many captures and prefixes it has.
"""

from __future__ import annotations

import numpy as np

from classifier.capture.labels import CATEGORIES
from classifier.identity.model import IdentityModel, device_tokens
from classifier.identity.oui import OuiRegistry, default_registry

PREFIX_SECONDS = (30.0, 120.0)


def examples(streams, records_of, prefixes=PREFIX_SECONDS):
    """(records, mac, stream index) for each stream and each prefix of it."""
    out = []
    for i, st in enumerate(streams):
        recs = records_of(i)
        out.append((recs, st.mac, i))
        for secs in prefixes:
            cut = st.t0_ns + int(secs * 1e9)
            early = [r for r in recs if r[0] <= cut]
            if len(early) < len(recs):
                out.append((early, st.mac, i))
    return out


def vendor_of(mac: int, group: str, registry: OuiRegistry | None = None) -> str:
    """The vendor a device counts under for vendor-held-out splits: its MAC's registered
    organisation (short form), else its own split group (unregistered or randomised MACs)."""
    reg = registry if registry is not None else default_registry()
    v = reg.vendor(mac)
    return v if v else f"group:{group}"


def module_block(vendor: str, mac: int) -> str:
    """A Wi-Fi module maker's MAC block (``espressif/5ccf7f``): its OUI names the radio's maker, and
    one block is mostly sold to one product maker, so the block stands for the product's maker where
    behaviour asks whether it has seen a device's maker."""
    return f"{vendor}/{int(mac) >> 24:06x}"


def vendor_folds(vendors: list[str], k: int, seed: int = 0) -> np.ndarray:
    """Fold per item: distinct vendors dealt into ``k`` folds, largest first, each to the fold
    with the fewest items so far (ties by a seeded shuffle)."""
    rng = np.random.default_rng(seed)
    names, counts = np.unique(np.asarray(vendors, dtype=object), return_counts=True)
    order = np.lexsort((rng.permutation(len(names)), -counts))
    load = np.zeros(k)
    fold_of = {}
    for j in order:
        f = int(np.argmin(load))
        fold_of[names[j]] = f
        load[f] += counts[j]
    return np.array([fold_of[v] for v in vendors])


def train_identity(streams, records_of, train: np.ndarray, seed: int = 0, folds: int = 4,
                   target_precision: float = 0.9, registry: OuiRegistry | None = None, log=None) -> IdentityModel:
    """Fit the identity voter on the training streams; ``records_of(i)`` gives stream ``i``'s
    identity records."""
    reg = registry if registry is not None else default_registry()
    idx = np.flatnonzero(train)
    ex = examples([streams[i] for i in idx], lambda j: records_of(int(idx[j])))
    ex = [(r, m, int(idx[j])) for r, m, j in ex]
    toks = [device_tokens(r, m, reg) for r, m, _ in ex]
    y = np.array([streams[i].category for _, _, i in ex], dtype=object)
    dev = np.array([streams[i].device for _, _, i in ex], dtype=object)
    _, inv, cnt = np.unique(dev, return_inverse=True, return_counts=True)
    w = 1.0 / cnt[inv]
    vendors = [vendor_of(streams[i].mac, streams[i].group, reg) for _, _, i in ex]
    model = IdentityModel(registry=reg)
    K = np.array([model.knowledge_scores(model._knowledge().hits(r, m)) for r, m, _ in ex])
    # vendor-held-out predictions of the token model, for calibration
    n_vendors = len(set(vendors))
    k = max(2, min(folds, n_vendors))
    f = vendor_folds(vendors, k, seed)
    L = np.zeros((len(ex), len(CATEGORIES)))
    for fold in range(k):
        te = f == fold
        tr = ~te
        sub = IdentityModel(registry=reg).fit_tokens([toks[i] for i in np.flatnonzero(tr)], y[tr], w[tr], seed=seed)
        for i in np.flatnonzero(te):
            L[i] = sub.learned_logp(toks[i])
    model.fit_calibration(K, L, y, w, target_precision=target_precision)
    # device-held-out predictions of devices whose vendor has other training devices
    vend = np.array(vendors, dtype=object)
    dev_vendors: dict[str, set] = {}
    for d, v in zip(dev.tolist(), vendors):
        dev_vendors.setdefault(v, set()).add(d)
    shared = np.array([len(dev_vendors[v]) > 1 for v in vendors])
    if shared.any():
        fd = vendor_folds(dev.tolist(), max(2, min(folds * 2, len(set(dev[shared].tolist())))), seed)
        L2 = np.zeros_like(L)
        for fold in np.unique(fd[shared]):
            te = (fd == fold) & shared
            tr = fd != fold
            sub = IdentityModel(registry=reg).fit_tokens([toks[i] for i in np.flatnonzero(tr)], y[tr], w[tr], seed=seed)
            for i in np.flatnonzero(te):
                L2[i] = sub.learned_logp(toks[i])
        model.fit_seen_calibration(K[shared], L2[shared], y[shared], w[shared], target_precision=target_precision)
    model.fit_tokens(toks, y, w, seed=seed)
    made: dict[str, set] = {}
    modules = model.module_makers()
    for v, i in zip(vendors, (i for _, _, i in ex)):
        if not v.startswith("group:"):
            made.setdefault(v, set()).add(streams[i].category)
            if v in modules:     # a module maker's block, the nearest thing to the product's maker
                made.setdefault(module_block(v, streams[i].mac), set()).add(streams[i].category)
    model.meta.update({"examples": len(ex), "devices": int(len(set(dev.tolist()))), "vendors": n_vendors,
                       "calibration_folds": k, "tokens": len(model.vocab),
                       "vendor_categories": {v: sorted(c) for v, c in sorted(made.items())}})
    if log:
        c = model.meta["calibration"]
        seen = model.meta.get("calibration_seen_vendor")
        log(f"identity voter: {len(ex)} examples of {model.meta['devices']} devices ({n_vendors} vendors), "
            f"{len(model.vocab)} tokens; unseen vendors: knowledge weight {c['a']:.2f}, learned weight {c['b']:.2f}, "
            f"threshold {c['threshold']:.2f} (vendor-held-out, {k} folds)"
            + (f"; seen vendors: {seen['a']:.2f}, {seen['b']:.2f}, threshold {seen['threshold']:.2f} "
               f"(device-held-out)" if seen else ""))
    return model
