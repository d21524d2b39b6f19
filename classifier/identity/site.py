"""The site teaches the identity voter: the operator's pinned categories as labelled examples.

A pin says "this device is a camera" about a device of this site. Its identity records (the
controller keeps them in the inventory) are then an example of the site's own, like a training
device's: :func:`fold_site` folds such examples into the identity voter's **token model** — the
behaviour models (session, segment) and the voter's calibrations are left as they were — so that
a second unit of the same model, which announces itself with the same words, DHCP options, mDNS
services and MAC vendor, is named.

How: the token model is a multinomial logistic regression trained with an L2 penalty (C = 1).
Refitting it on its training set plus the site's examples would need the training set; instead the
trained coefficients stand for it as the prior's centre, and the site's examples are fitted under
the same penalty around them (a MAP estimate: ``0.5·|W − W_base|² + C·Σ w_i·CE_i``). Only the rows
of the tokens the site's examples carry move; tokens no training device had get rows of their own
(from 0); a category the token model never had gets a column. Each site device weighs
``weight`` (split among its examples: all its records, and its first 30 s and 120 s, as in
training). The device's MAC vendor joins the voter's vendors (its ``oui:`` token is in the
vocabulary), so the seen-vendor calibration reads its devices, and the vendor's categories
(``vendor_categories``) gain the pinned one, as a training device's would — except a Wi-Fi module
maker's prefix (Espressif, AzureWave, ...), which says who made the radio: its token is left out
and only its block (vendor and OUI) gains the category.

The same function serves the running controller (refit in its decision worker when pins change,
from the base model each time, never cumulatively) and ``iotclass train --site INVENTORY``
(:func:`read_site_examples` reads the inventory's pins and identity values).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from classifier.capture.labels import CATEGORIES
from classifier.errors import IotClassError
from classifier.identity.model import IdentityModel, device_tokens
from classifier.identity.training import PREFIX_SECONDS, module_block

#: weight of one site device (a training device weighs 1): the operator's own label of a device
#: of this site counts as much as one training device
SITE_WEIGHT = 1.0
#: site devices read at most (the most recently pinned first), and records per device
MAX_SITE_DEVICES = 2000
MAX_SITE_RECORDS = 2000


class SiteError(IotClassError):
    pass


@dataclass(frozen=True)
class SiteExample:
    """One pinned device: its MAC, the category the operator gave it, its identity records
    ``(t_ns, kind, value)``."""

    mac: int
    category: str
    records: tuple


def _examples(ex: SiteExample) -> list[list]:
    recs = sorted(ex.records)[:MAX_SITE_RECORDS]
    out = [recs]
    if recs:
        t0 = recs[0][0]
        for secs in PREFIX_SECONDS:
            early = [r for r in recs if r[0] <= t0 + int(secs * 1e9)]
            if len(early) < len(recs):
                out.append(early)
    return out


def digest(examples) -> str:
    """A short digest of the examples (which devices, categories and records)."""
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.mac):
        h.update(f"{ex.mac:012x}={ex.category};".encode())
        for t, k, v in sorted(ex.records):
            h.update(f"{k}\x00{v}\x00".encode())
    return h.hexdigest()[:12]


def fold_site(model: IdentityModel, examples, weight: float = SITE_WEIGHT, C: float = 1.0) -> IdentityModel:
    """A new identity voter: ``model`` with the site's ``examples`` (:class:`SiteExample`) folded
    into its token model (see the module docstring). ``model`` is not changed; with no example it
    is returned as it is."""
    from scipy.optimize import minimize
    from scipy.sparse import csr_matrix

    examples = [e for e in examples if e.category in CATEGORIES]
    if not examples or not model.classes:
        return model
    reg = model._registry()
    modules = model.module_makers()
    toks, ys, ws = [], [], []
    for ex in examples:
        parts = _examples(ex)
        vendor = reg.vendor(ex.mac)
        # a Wi-Fi module maker's prefix names the radio's maker, not the product's: it must not make
        # every device with such a radio one of a vendor the voter has seen (measured: a pinned Blink
        # camera, AzureWave radio, turned an AzureWave-radio lock from unknown into a wrong plug)
        drop = {f"oui:{vendor}"} if vendor in modules else set()
        for recs in parts:
            toks.append(device_tokens(recs, ex.mac, reg) - drop)
            ys.append(ex.category)
            ws.append(weight / len(parts))
    classes = list(model.classes) + sorted({y for y in ys if y not in model.classes}, key=CATEGORIES.index)
    new_tokens = sorted({t for ts in toks for t in ts if t not in model.vocab})
    vocab = dict(model.vocab)
    for t in new_tokens:
        vocab[t] = len(vocab)
    n_cls = len(classes)
    coef0 = np.zeros((len(vocab), n_cls))
    coef0[:len(model.vocab), :len(model.classes)] = model.coef
    intercept = np.concatenate([model.intercept, np.full(n_cls - len(model.classes), float(model.intercept.min()))])
    rows = sorted({vocab[t] for ts in toks for t in ts})
    col_of = {r: j for j, r in enumerate(rows)}
    ri, ci = [], []
    for i, ts in enumerate(toks):
        for t in ts:
            ri.append(i)
            ci.append(col_of[vocab[t]])
    X = csr_matrix((np.ones(len(ri)), (ri, ci)), shape=(len(toks), len(rows)))
    z0 = intercept + X @ coef0[rows]
    Y = np.zeros((len(toks), n_cls))
    Y[np.arange(len(toks)), [classes.index(y) for y in ys]] = 1.0
    w = np.asarray(ws)[:, None]

    def f(flat):
        d = flat.reshape(len(rows), n_cls)
        z = z0 + X @ d
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = 0.5 * float((d * d).sum()) - C * float((w * Y * logp).sum())
        grad = d + C * (X.T @ (w * (np.exp(logp) - Y)))
        return loss, grad.ravel()

    res = minimize(f, np.zeros(len(rows) * n_cls), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    coef = coef0.copy()
    coef[rows] += res.x.reshape(len(rows), n_cls)
    meta = {**model.meta}
    made = {v: set(c) for v, c in (meta.get("vendor_categories") or {}).items()}
    for ex in examples:
        v = reg.vendor(ex.mac)
        if v:
            made.setdefault(v, set()).add(ex.category)
            if v in modules:
                made.setdefault(module_block(v, ex.mac), set()).add(ex.category)
    if meta.get("vendor_categories") is not None or made:
        meta["vendor_categories"] = {v: sorted(c, key=CATEGORIES.index) for v, c in sorted(made.items())}
    meta["site"] = {"devices": len(examples), "examples": len(toks), "tokens_added": len(new_tokens),
                    "rows_moved": len(rows), "weight": weight, "digest": digest(examples),
                    "categories": {c: sum(1 for e in examples if e.category == c)
                                   for c in sorted({e.category for e in examples}, key=CATEGORIES.index)}}
    folded = replace(model, vocab=vocab, coef=coef, intercept=intercept, classes=classes, meta=meta)
    for cached in ("_vendors", "_made"):
        folded.__dict__.pop(cached, None)
    return folded


def read_site_examples(path: str | Path) -> list[SiteExample]:
    """The pinned categories of an inventory (``controller_app`` writes it: each device's last pin
    or release from the operator page, in its ``audit`` table) with each device's identity values,
    as :class:`SiteExample` rows. A pin of an action or of ``unknown`` names no category: left out."""
    path = Path(path)
    if not path.exists():
        raise SiteError(f"{path}: no inventory there (the controller's --inventory-db)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.DatabaseError as exc:
        raise SiteError(f"{path}: cannot read the inventory: {exc}") from None
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"audit", "identity"} <= tables:
            raise SiteError(f"{path}: not a controller inventory with pins (no audit or identity table)")
        last = db.execute("SELECT mac, op, after FROM audit WHERE id IN (SELECT max(id) FROM audit GROUP BY mac) "
                          "ORDER BY id DESC LIMIT ?", (MAX_SITE_DEVICES,)).fetchall()
        out = []
        for mac, op, after in last:
            if op != "pin" or not (after or "").startswith("category="):
                continue
            cat = after.split("=", 1)[1].strip()
            if cat not in CATEGORIES:
                continue
            recs = db.execute("SELECT first_seen, kind, value FROM identity WHERE mac=? ORDER BY first_seen LIMIT ?",
                              (mac, MAX_SITE_RECORDS)).fetchall()
            try:
                mac_int = int(mac.replace(":", ""), 16)
            except ValueError:
                continue
            out.append(SiteExample(mac_int, cat, tuple((int(round(t * 1e9)), k, v) for t, k, v in recs)))
    except sqlite3.DatabaseError as exc:
        raise SiteError(f"{path}: cannot read the inventory: {exc}") from None
    finally:
        db.close()
    return out


__all__ = ["MAX_SITE_DEVICES", "SITE_WEIGHT", "SiteError", "SiteExample", "digest", "fold_site",
           "read_site_examples"]
