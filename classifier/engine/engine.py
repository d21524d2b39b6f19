"""The decision engine: one device's packets (and what it says about itself) -> a
:class:`~classifier.engine.decision.Decision`.

Three calibrated voters, each with its own open-set threshold (the device's sessions and segments
are built from its packets with the same functions as the offline tools; a caller that built the
sessions already hands them over, see :meth:`DecisionEngine.sessions`):

* the **session model** (Chen et al.): the last ``n`` sessions, once the device has
  ``min_sessions_provisional`` of them;
* the **segment model** (Bai et al.): the last ``t`` complete segments, once there is a full
  window with traffic (a camera may hold one session for hours);
* the **identity voter** (:mod:`classifier.identity`): the device's identity records so far
  (DHCP, DNS, mDNS/DNS-SD, SSDP, TLS SNI, HTTP, its MAC's vendor), from the first record on.

The class is the top one of the present voters' probabilities, averaged with their weights. It
is accepted when a voter vouches for it (its probability reaches that voter's threshold); the
decision's confidence is the highest such probability.

* *provisional*: accepted;
* *confirmed* — the stated minimum evidence, always over at least ``min_packets_confirmed``
  packets and with no present voter vouching for another class: either the behaviour evidence
  is full (``min_sessions_confirmed`` sessions or a full segment window) and the confidence
  reaches ``confirm_confidence`` (the rule before identity evidence existed), or — earlier —
  independent evidence agrees: two voters vouch for the class (identity and
  ``min_sessions_provisional`` sessions, say), or the identity voter alone at
  ``confirm_confidence`` on knowledge hits from at least ``min_identity_kinds`` kinds of record
  (a host name and an mDNS service type, say). When the minimum is there but a voter vouches for
  another class, the decision stays provisional and its explanation ends with
  ``not confirmed: identity vouches for plug 0.97, not camera``;
* *unknown*: once the behaviour evidence is full and no voter vouches.
With less, no decision yet (``None``).

**Vendors not seen in training** (``behaviour_alone_needs_seen_vendor``, on by default): the
behaviour models (session, segment) may vouch for a class on their own only for a device whose
MAC vendor (OUI) is among the training devices' vendors — the ``oui:`` tokens of the identity
voter's vocabulary, so the set comes from training alone. For any other device a class is
accepted only if the identity voter vouches for it; the behaviour models still count towards
agreement (early confirmation) and their probabilities still enter the average. Measured on
devices of vendors left out of training, the behaviour models were almost always wrong yet
accepted (their thresholds are calibrated on training vendors' devices), while the identity
voter, calibrated on vendor-held-out devices, did not accept a wrong category. A locally
administered (randomised) MAC has no vendor to check: the rule does not apply to it (phones
randomise their MACs), nor when the engine has no identity voter or its training devices had no
registered vendor (no OUI registry). A globally administered MAC whose prefix the registry does
not know counts as a vendor not seen.

Explanations name the evidence: each voter's answer, the identity records behind it ("DHCP
host name …", "mDNS _hap._tcp ci=5 (lightbulb)", "DNS *.vendor.com"), the sessions the
attention weighted most (with their pools), and the segment features whose occlusion moved the
segment model most.

A saved engine is a folder: ``engine.json`` (settings, thresholds, training summary) beside
``session.safetensors`` and, if present, ``segment.safetensors`` and ``identity.safetensors``.
The shipped default lives in ``classifier/models/default``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from operator import itemgetter
from pathlib import Path

import numpy as np

from classifier.capture.packets import Packets
from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN, Decision
from classifier.errors import IotClassError
from classifier.features.devices import DeviceView, is_unicast, split_devices
from classifier.features.instances import SESSION_NUMERIC, Instances, session_numeric
from classifier.features.segments import FEATURE_NAMES, segment_features, window_bounds, window_of_rows
from classifier.features.sessions import Sessions, session_table
from classifier.identity.oui import LOCAL_BIT

from classifier.capture.labels import CATEGORIES as CATEGORIES_ALL

DEFAULT_ENGINE = Path(__file__).resolve().parent.parent / "models" / "default"
ENGINE_FORMAT = "iotclass-engine"
ENGINE_VERSION = 1
#: Model answers an engine remembers (:meth:`DecisionEngine._memo`).
MEMO_SIZE = 4096
#: (a voter's classes, the engine's) -> where each of the voter's probabilities goes
#: (:meth:`DecisionEngine._aligned_to`)
_ALIGNED: dict = {}


def _last_per_device(memo: dict, mac: int, key, compute):
    """``compute()``, or what it gave for device ``mac`` last time when ``key`` is the same
    as then: one answer per device (its last), for at most :data:`MEMO_SIZE` devices, the most
    recently used last."""
    hit = memo.pop(mac, None)
    out = hit[1] if hit is not None and hit[0] == key else compute()
    memo[mac] = (key, out)
    while len(memo) > MEMO_SIZE:
        memo.pop(next(iter(memo)))
    return out


def _window_instance(values: np.ndarray, start: int) -> Instances | None:
    """The segment model's input on a window's values (None: no packet in it)."""
    win = values.astype(np.float32)
    if win[:, FEATURE_NAMES.index("n_total")].sum() == 0:
        return None
    return Instances({"seg": win[None]}, np.zeros(1, np.int64), np.array([int(start)]))


def device_span(pk: Packets, mac: int) -> tuple[int, int, int, bool]:
    """(device ``mac``'s entries in ``pk`` as :func:`split_devices` files them, its first and last
    packet time, whether ``pk`` is in time order): one pass, no device split."""
    from classifier.features.kernels import device_span as kernel
    if not bool(is_unicast(np.array([mac], np.uint64))[0]):
        return 0, 0, 0, True
    n, lo, hi, ordered = kernel(pk.eth_src, pk.eth_dst, pk.ts_ns, np.uint64(mac))
    return int(n), int(lo), int(hi), bool(ordered)


class EngineError(IotClassError):
    pass


@dataclass
class _Vote:
    name: str            # identity | session | segment
    p: np.ndarray        # probabilities in the engine's class order
    threshold: float     # the voter's own open-set threshold
    weight: float
    kind: str            # the model kind (for Decision.model)
    # what a decision reads of ``p`` again and again, read once: its top class, that class's
    # probability, and each probability as a float
    top: int = field(init=False, repr=False)
    top_p: float = field(init=False, repr=False)
    ps: list = field(init=False, repr=False)

    def __post_init__(self):
        self.top = int(self.p.argmax())
        self.top_p = float(self.p.max())
        self.ps = self.p.tolist()


@dataclass
class _Evidence:
    votes: list
    counts: dict
    window: bool
    id_vote: object
    s_inst: object
    g_inst: object
    vendor: tuple | None = None   # (seen | unseen | unregistered | local, vendor); None: the rule cannot apply


@dataclass
class EngineConfig:
    min_sessions_provisional: int = 3
    min_sessions_confirmed: int = 8
    confirm_confidence: float = 0.9
    threshold: float = 0.5            # open-set threshold of the session model (calibrated)
    segment_threshold: float = 0.5    # the segment model's
    segment_weight: float = 0.5       # weight of the segment model when it takes part
    identity_weight: float = 0.5      # weight of the identity voter (relative, like segment_weight)
    min_packets_confirmed: int = 20   # never confirm on fewer packets
    min_identity_kinds: int = 2       # identity alone confirms on hits from this many record kinds
    voters: tuple = ("identity", "session", "segment")   # which voters take part (ablations)
    behaviour_alone_needs_seen_vendor: bool = True   # behaviour vouches alone only for training vendors' devices
    min_unknown_seconds: float = 600.0  # never unknown before this much of the device's traffic (s)
    #: behaviour alone confirms only a category the device's MAC vendor had among the training
    #: devices (else it stays provisional until independent evidence agrees)
    behaviour_confirms_known_vendor_category: bool = True
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
    identity_model: object | None = None
    #: the identity voter as trained (before the site's examples were folded in: learn_site)
    base_identity_model: object | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return self.info.get("version", "untrained")

    @property
    def classes(self) -> list[str]:
        """The engine's categories: every category with an identity voter (its knowledge names
        them all), else the session model's."""
        if self.identity_model is not None:
            from classifier.capture.labels import CATEGORIES
            return list(CATEGORIES)
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
        last = sess.take(slice(len(sess) - k, len(sess)))       # views of the last k rows
        if last.pool is None or (last.pool == "").any():
            self._fill_pools(last)      # the pools of the sessions the model reads (a pool is per address)
        pools = np.full((1, n), "", dtype=object)
        pools[0, :k] = last.pool
        num = np.zeros((1, n, len(SESSION_NUMERIC)), np.float32)
        num[0, :k] = session_numeric(last, SESSION_NUMERIC)
        return Instances({"pool": pools, "num": num, "length": np.array([k])}, np.zeros(1, np.int64),
                         np.array([int(last.start_ns[0])]))

    def _segment_instance(self, pk: Packets, mac, now_ns: int, span: tuple | None = None) -> Instances | None:
        """The device's last full window of complete segments up to ``now_ns``. In a packet table
        in time order (the controller's buffers, captures) only the window's packets are read
        (:func:`~classifier.features.segments.window_of_rows`); otherwise every segment is built.
        In a controller buffer's table (``pk.rows``: where its rows lie in the buffer's store,
        each row written once: :meth:`controller_app.learning.Learner.packets`) the window is
        remembered per device: the same rows of the same store are the same packets, so the same
        window, and only a window that reads other rows is built again.
        ``mac``: the device (or its :class:`~classifier.features.devices.DeviceView`, as before);
        ``span``: :func:`device_span` of it, when at hand."""
        c = self.config
        if isinstance(mac, DeviceView):
            view, mac = mac, int(mac.macs[0]) if len(mac.macs) == 1 else None
            span = None if mac is None else span
        else:
            view = None
        if mac is not None:
            span = span or device_span(pk, mac)
        if span is not None and span[3]:
            bounds = window_bounds(pk, c.interval, c.t, max(int(now_ns), span[2]), span[1])
            if bounds is None:
                return None

            def build():
                return _window_instance(*window_of_rows(pk, mac, c.interval, c.t, *bounds))
            rows = getattr(pk, "rows", None)
            if rows is None:
                return build()
            # a buffer's rows (controller_app.learning: each written once): the same rows of the
            # same store, the same packets, and so the same window as last time
            key = (rows[0], rows[1] + bounds[0], rows[1] + bounds[1], bounds[2], c.interval, c.t)
            return _last_per_device(self.__dict__.setdefault("_windows", {}), mac, key, build)
        seg = segment_features(pk, view if view is not None else split_devices(pk, devices=[mac]), c.interval,
                               end_ns=now_ns)
        rows = np.flatnonzero(seg.complete)
        if len(rows) < c.t:
            return None
        return _window_instance(seg.values[rows[-c.t:]], int(seg.start_ns[rows[-c.t]]))

    def _memo_key(self, what: str, model, inst: Instances) -> tuple:
        return (what, model) + tuple(
            (k, v.tobytes()) if v.dtype != object else (k, tuple(v.ravel().tolist())) for k, v in sorted(inst.X.items()))

    def _vote(self, records, mac: int):
        """The identity voter's vote on a device's records, remembered on the voter for the same
        MAC and the same (kind, value) pairs in the same order (the vote reads nothing else of
        them: not their times): between two of a device's decisions its records rarely change.
        One vote per device (its last), for at most :data:`MEMO_SIZE` devices. A voter the site's
        examples replace (:meth:`learn_site`) starts with nothing remembered."""
        model = self.identity_model
        mac = int(mac)
        return _last_per_device(model.__dict__.setdefault("_votes", {}), mac, tuple(map(itemgetter(1, 2), records)),
                                lambda: model.vote(records, mac))

    def _remembered(self, what: str, model, inst: Instances) -> bool:
        """Whether :meth:`_memo` holds ``model``'s answer ``what`` on ``inst``."""
        return self._memo_key(what, model, inst) in self.__dict__.get("_answers", {})

    def _memo(self, what: str, model, inst: Instances, fn):
        """``fn(inst)`` for a model's answer on one instance (its probabilities, its explanation),
        remembered for the same input: a device's segment window changes once per segment (5 min)
        while the controller asks every 30 s. The same input gives the same answer (inference is
        deterministic), so this changes no decision; at most :data:`MEMO_SIZE` answers are held."""
        key = self._memo_key(what, model, inst)
        memo = self.__dict__.setdefault("_answers", {})
        hit = memo.get(key)
        if hit is not None:
            memo[key] = memo.pop(key)            # most recently used last
            return hit
        out = fn(inst)
        memo[key] = out
        while len(memo) > MEMO_SIZE:
            memo.pop(next(iter(memo)))
        return out

    @staticmethod
    def _aligned_to(model_classes, proba: np.ndarray, classes: list[str]) -> np.ndarray:
        """A voter's probabilities in the engine's class order (0 for classes it lacks)."""
        key = (tuple(model_classes), tuple(classes))
        where = _ALIGNED.get(key)
        if where is None:
            pairs = [(classes.index(c), j) for j, c in enumerate(model_classes) if c in classes]
            if len({i for i, _ in pairs}) != len(pairs):      # a class named twice: the last one counts
                pairs = list({i: (i, j) for i, j in pairs}.values())
            where = _ALIGNED[key] = (np.array([i for i, _ in pairs], np.intp), np.array([j for _, j in pairs], np.intp))
        out = np.zeros(len(classes))
        out[where[0]] = np.asarray(proba)[where[1]]
        return out

    def sessions(self, pk: Packets, mac: int) -> Sessions:
        """Device ``mac``'s sessions as :meth:`decide` reads them (this engine's idle timeout),
        pools not filled yet: a caller that needs them too builds them once, fills their pools
        if it likes, and hands them to :meth:`decide`."""
        return session_table(pk, split_devices(pk, devices=[mac]), self.config.idle_timeout)

    def decide(self, pk: Packets, mac: int, now_ns: int | None = None, identity=None,
               sessions: Sessions | None = None, explain_later: bool = False) -> Decision | None:
        """Decide on device ``mac`` from ``pk`` (its packets so far) and ``identity`` (its identity
        records so far: ``(t_ns, kind, value)`` tuples; records after ``now_ns`` are ignored).
        ``sessions``: the device's sessions from :meth:`sessions` on the same packets (built here
        when not given); pools left empty are filled here. ``explain_later``: the segment model's
        occlusion explanation (one forward pass per feature, several times the decision itself)
        is left out when it is not remembered already, and the decision carries it as
        ``pending``: :meth:`explained` completes it, equal to the decision made without
        ``explain_later`` (the controller enforces first and explains after)."""
        ev = self.evidence(pk, mac, now_ns, identity, sessions=sessions)
        return None if ev is None else self.conclude(ev, explain_later=explain_later)

    @property
    def window_schedule(self) -> tuple[float, int] | None:
        """When a device's segment window moves: (segment length in seconds, segments in a
        window). The window is the last ``t`` complete segments, counted from the device's first
        packet, so it changes only when a segment completes; None when no segment model votes."""
        c = self.config
        if self.segment_model is None or "segment" not in c.voters:
            return None
        return float(c.interval), int(c.t)

    def prepare(self, pk: Packets, mac: int, now_ns: int | None = None) -> bool:
        """The segment model's vote on device ``mac``'s window at ``now_ns``, computed now and
        remembered (:meth:`_memo`) for its next decision: the controller asks once a segment has
        completed, ahead of the decision that reads the new window, so that decision does not
        wait on the model. A decision reads the remembered vote only on the same window values,
        so preparing never changes one. Returns whether there was a full window to vote on."""
        if self.window_schedule is None:
            return False
        span = device_span(pk, mac)
        if span[0] == 0:
            return False
        now = span[2] if now_ns is None else max(int(now_ns), span[2])
        g_inst = self._segment_instance(pk, mac, now, span)
        if g_inst is None:
            return False
        self._memo("p", self.segment_model, g_inst, self.segment_model.predict_proba)
        return True

    @staticmethod
    def explained(d: Decision | None) -> Decision | None:
        """``d`` with its whole explanation (``d`` itself when nothing is pending)."""
        if d is None or d.pending is None:
            return d
        explanation, parts = d.pending()
        evidence = dict(d.evidence)
        if parts is not None:
            evidence["explain"] = parts
        return replace(d, explanation=explanation, evidence=evidence, pending=None)

    def evidence(self, pk: Packets, mac: int, now_ns: int | None = None, identity=None,
                 voters: tuple | None = None, sessions: Sessions | None = None) -> "_Evidence | None":
        """Every present voter's answer on the device's evidence so far (``None``: no packets)."""
        c = self.config
        voters = c.voters if voters is None else voters
        if identity is not None and hasattr(identity, "for_mac"):   # an IdentityRecords table
            identity = identity.for_mac(mac)
        span = device_span(pk, mac)
        if span[0] == 0:
            return None
        t_min, t_max = span[1], span[2]
        now = t_max if now_ns is None else max(int(now_ns), t_max)
        classes = self.classes
        votes: list[_Vote] = []
        id_vote = None
        if self.identity_model is not None and "identity" in voters:
            identity = identity or ()
            records = [r for r, t in zip(identity, map(itemgetter(0), identity)) if t <= now]
            if records or self.identity_model.speaks_for_mac(mac):   # the MAC is a record too
                id_vote = self._vote(records, mac)
                votes.append(_Vote("identity", self._aligned_to(list(CATEGORIES_ALL), id_vote.proba, classes),
                                   id_vote.threshold, c.identity_weight, self.identity_model.kind))
        sess = self.sessions(pk, mac) if sessions is None else sessions
        n_s = len(sess)
        s_inst = g_inst = None
        if "segment" in voters and self.segment_model is not None:
            g_inst = self._segment_instance(pk, mac, now, span)
        if "session" in voters and n_s >= c.min_sessions_provisional:
            s_inst = self._session_instance(sess)
            ps = self._aligned_to(self.session_model.classes, self._memo(
                "p", self.session_model, s_inst, self.session_model.predict_proba)[0], classes)
            votes.append(_Vote("session", ps, c.threshold, 1 - c.segment_weight, self.session_model.kind))
        if g_inst is not None:
            pg = self._aligned_to(self.segment_model.classes, self._memo(
                "p", self.segment_model, g_inst, self.segment_model.predict_proba)[0], classes)
            votes.append(_Vote("segment", pg, c.segment_threshold, c.segment_weight, self.segment_model.kind))
        counts = {"packets": int(span[0]), "sessions": n_s,
                  "segments": int((now - t_min) // int(c.interval * 1e9)),
                  "seconds": round((now - t_min) / 1e9, 3),
                  "identity_records": id_vote.records if id_vote is not None else 0}
        vendor = self.vendor_status(mac) if "identity" in voters else None
        return _Evidence(votes, counts, g_inst is not None, id_vote, s_inst, g_inst, vendor)

    def vendor_status(self, mac: int) -> tuple[str, str | None] | None:
        """Device ``mac``'s MAC vendor against the training devices' vendors: ``("seen", v)``,
        ``("unseen", v)``, ``("unregistered", None)`` (a globally administered prefix the
        registry does not know), ``("module", v)`` (a Wi-Fi module maker's prefix that no training
        device had: it names the radio's maker, not the product's; a block of it that training
        devices had is ``("seen", "v/xxxxxx")``) or ``("local", None)`` (a locally administered,
        randomised MAC); ``None`` when the engine cannot tell (no identity voter, or its training
        devices had no registered vendor)."""
        if self.identity_model is None:
            return None
        seen = self.identity_model.training_vendors()
        if not seen:
            return None
        if int(mac) & LOCAL_BIT:
            return ("local", None)
        vendor = self.identity_model.vendor(mac)
        if vendor is None:
            return ("unregistered", None)
        if vendor in self.identity_model.module_makers():
            # the radio's maker: the device's own block of it stands for the product's maker
            from classifier.identity.training import module_block
            block = module_block(vendor, mac)
            made = self.identity_model.vendor_categories() or {}
            return ("seen", block) if block in made else ("module", vendor)
        return ("seen" if vendor in seen else "unseen", vendor)

    def conclude(self, ev: "_Evidence", voters: tuple | None = None, gate: bool | None = None,
                 explain_later: bool = False) -> Decision | None:
        """The decision from the voters' answers (only ``voters`` among them, if given).
        ``gate``: whether behaviour alone needs a vendor seen in training to vouch, and one known
        to make the category to confirm (default: the engine's ``behaviour_alone_needs_seen_vendor``;
        ``False`` for the ablations without the vendor rules)."""
        c = self.config
        gate = c.behaviour_alone_needs_seen_vendor if gate is None else gate
        classes = self.classes
        votes = ev.votes if voters is None else [v for v in ev.votes if v.name in voters]
        window = any(v.name == "segment" for v in votes)
        id_vote = ev.id_vote if any(v.name == "identity" for v in votes) else None
        if not votes:
            return None
        p = sum(v.weight * v.p for v in votes) / sum(v.weight for v in votes)
        k = int(p.argmax())
        status = ev.vendor[0] if gate and ev.vendor is not None else None
        idv = next((v for v in votes if v.name == "identity"), None)
        if status not in (None, "seen") and idv is not None and idv.top_p >= idv.threshold:
            # a device whose maker the behaviour models never saw (or cannot tell): they may not
            # move the class away from the one the identity voter vouches for (they still count
            # towards agreement when they vouch for it too)
            k = idv.top
        n_s, n_pk = ev.counts["sessions"], ev.counts["packets"]
        evidence = dict(ev.counts)
        # behaviour evidence enough to confirm (or to call the device unknown)
        enough = n_s >= c.min_sessions_confirmed or ev.window
        model = f"{'+'.join(v.kind for v in votes)}@{self.version}"
        vouch = [v for v in votes if v.ps[k] >= v.threshold]
        dissent = [v for v in votes if v.top != k and v.top_p >= v.threshold]
        answers = self._answer_line(votes)
        held, held_why = [], None
        if gate and vouch and not any(v.name == "identity" for v in vouch):
            held_why = self._behaviour_may_not(ev, classes[k], confirm=False)
            if held_why:
                held, vouch = vouch, []     # behaviour alone may not accept this class for this device
        if not vouch:
            # unknown only on the full behaviour evidence over the stated minimum of time: a device
            # that has shown eight sessions in its first 30 s has not yet shown what it is
            if not enough or ev.counts.get("seconds", float("inf")) < c.min_unknown_seconds:
                return None
            if held:
                why = (f"top class {classes[k]} at {float(p[k]):.2f}: {' and '.join(v.name for v in held)} "
                       f"vouch{'es' if len(held) == 1 else ''} for it, but behaviour alone does not accept "
                       f"{held_why} and the identity voter does not")
            else:
                lowest = min(v.threshold for v in votes)
                why = (f"top class {classes[k]} at {float(p[k]):.2f}: no voter reaches its open-set "
                       f"threshold (lowest {lowest:.2f})")
            if c.explain:
                evidence["explain"] = {"voters": self._voters(votes, k), "notes": [why]}
            return Decision(UNKNOWN, float(p[k]), UNKNOWN, model, f"{why} [{answers}]", evidence)
        conf = max(v.ps[k] for v in vouch)
        behaviour = [v for v in vouch if v.name != "identity"]
        # the minimum evidence, before asking whether all vouching voters agree: a behaviour model on
        # the full behaviour evidence, for a category the device's vendor is known to make; or, from
        # sources that carry to devices never seen, independent evidence that agrees
        full = enough and behaviour and max(v.ps[k] for v in behaviour) >= c.confirm_confidence
        alone_why = self._behaviour_may_not(ev, classes[k], confirm=True, id_vote=id_vote) if gate else None
        minimum = n_pk >= c.min_packets_confirmed and (
            (full and not alone_why) or self._agree(vouch, k, classes, id_vote, alone_why))
        # the evidence would have been enough, but for the rules on what behaviour alone confirms
        held_by_vendor = (not minimum and alone_why is not None and n_pk >= c.min_packets_confirmed
                          and (full or (len(behaviour) >= 2 and len(vouch) == len(behaviour))))
        confirmed = minimum and not dissent                    # and no voter vouches for another class
        stage = CONFIRMED if confirmed else PROVISIONAL
        why = note = ""
        if (minimum or held_by_vendor) and dissent:
            said = [f"{v.name} vouches for {classes[v.top]} {v.top_p:.2f}" for v in dissent]
            others = " and ".join(t + self._identity_why(v, id_vote, classes[v.top]) for t, v in zip(said, dissent))
            why = f"not confirmed: {others}, not {classes[k]}"
            note = f"not confirmed: {' and '.join(said)}, not {classes[k]}"    # without the device's own strings
        elif held_by_vendor:
            why = note = f"not confirmed: behaviour alone does not confirm {alone_why}, and no identity evidence agrees"
        s_inst = ev.s_inst if any(v.name == "session" for v in votes) else None
        g_inst = ev.g_inst if window else None

        def explain(segments: bool = True) -> tuple[str, dict | None]:
            explanation, parts = "", None
            if c.explain:
                explanation, parts = self._explain(classes[k], votes, s_inst, g_inst if segments else None, id_vote)
            if why:
                explanation = f"{explanation}; {why}" if explanation else f"{why} [{answers}]"
            if parts is not None:
                parts["notes"] = [note] if note else []
            return explanation, parts

        later = (explain_later and c.explain and g_inst is not None
                 and not self._remembered("x", self.segment_model, g_inst))
        explanation, parts = explain(segments=not later)
        if parts is not None:
            evidence["explain"] = parts
        # who vouches, for the controller's "claims only tighten": a behaviour model counts as
        # agreeing only on the full behaviour evidence (three trivial sessions of a device that names
        # itself a camera are no behaviour of a camera)
        agreeing = tuple(v.name for v in votes if v.ps[k] >= v.threshold and (v.name == "identity" or enough))
        return Decision(classes[k], conf, stage, model, explanation, evidence, agreeing,
                        pending=explain if later else None)

    def _behaviour_may_not(self, ev: "_Evidence", category: str, confirm: bool, id_vote=None) -> str | None:
        """Why the behaviour models alone may not accept (``confirm``: confirm) ``category`` for this
        device, in words; None when they may. They carry across devices of a maker whose devices of
        that kind they were trained on, and nowhere else: on other vendors' devices they were
        near chance, and on a vendor seen only in other categories confidently wrong.

        * accept: the device's MAC vendor had a training device of ``category``; a module maker's
          prefix, an unregistered one or a vendor never seen names nothing to go on;
        * confirm, also: a randomised MAC names no vendor; and the device's own claims do not point
          elsewhere (when public knowledge gives its records weight for some category, ``category``
          must be among them)."""
        if ev.vendor is None:
            return None
        status, vendor = ev.vendor
        if status == "unseen":
            return f"a device of a vendor not seen in training (OUI {vendor})"
        if status == "unregistered":
            return "a device of a vendor not seen in training (OUI not registered)"
        if status == "module":
            return f"a device whose MAC prefix is a Wi-Fi module maker's (OUI {vendor}), not its product's maker's"
        if status == "seen" and self.config.behaviour_confirms_known_vendor_category:
            made = self.identity_model.vendor_categories()
            if made is not None and category not in made.get(vendor, ()):
                return f"a category its vendor ({vendor}) had no training device of"
        if not confirm:
            return None
        if status == "local":
            return "a device with a randomised MAC (no vendor to go on)"
        if id_vote is not None:
            k = self.identity_model.knowledge_scores(id_vote.hits)
            if k.sum() > 0 and k[list(CATEGORIES_ALL).index(category)] <= 0:
                named = ", ".join(c for c, v in zip(CATEGORIES_ALL, k) if v > 0)
                return f"{category} when the device's own claims name only other categories ({named})"
        return None

    @staticmethod
    def _identity_why(v: "_Vote", id_vote, category: str) -> str:
        """`` (its evidence)`` when ``v`` is the identity voter, else nothing."""
        if v.name != "identity" or id_vote is None:
            return ""
        from classifier.identity.model import describe
        what = describe(id_vote, category)
        return f" ({what})" if what else ""

    def _agree(self, vouch: list["_Vote"], k: int, classes: list[str], id_vote, alone_why: str | None) -> bool:
        """Early confirmation: the identity voter and a behaviour model vouch for the class (the two
        behaviour models alone only where behaviour alone may confirm: ``alone_why`` is None), or
        the identity voter alone at ``confirm_confidence`` on knowledge hits from
        ``min_identity_kinds`` kinds of record."""
        c = self.config
        if len(vouch) >= 2:
            return any(v.name == "identity" for v in vouch) or alone_why is None
        v = vouch[0]
        return (v.name == "identity" and v.ps[k] >= c.confirm_confidence
                and len(id_vote.supporting_kinds(classes[k])) >= c.min_identity_kinds)

    def _voters(self, votes, k: int) -> list[dict]:
        classes = self.classes
        return [{"name": v.name, "category": classes[v.top], "probability": round(v.top_p, 4),
                 "threshold": round(float(v.threshold), 4), "vouches": bool(v.ps[k] >= v.threshold)} for v in votes]

    def _answer_line(self, votes) -> str:
        """Each voter's top class and its probability, in words."""
        classes = self.classes
        return ", ".join(f"{v.name} {classes[v.top]} {v.top_p:.2f}" for v in votes)

    def _explain(self, category: str, votes, s_inst: Instances | None, g_inst: Instances | None,
                 id_vote) -> tuple[str, dict]:
        """The decision's explanation, as one line for people and as structured parts (for the
        operator page: ``voters``, ``identity`` — what the device said, each value as it sent it —,
        ``sessions``, ``segments``; ``notes`` are added by the caller), from the same evidence."""
        k = self.classes.index(category)
        parts = [self._answer_line(votes)]
        out = {"voters": self._voters(votes, k), "identity": [], "sessions": [], "segments": []}
        if id_vote is not None:
            from classifier.identity.model import describe
            what = describe(id_vote, category)
            if what:
                parts.append("identity: " + what)
            seen = set()
            for h in sorted((h for h in id_vote.hits if h.category == category), key=lambda h: -h.weight):
                if (h.kind, h.value) in seen or len(seen) >= 8:
                    continue
                seen.add((h.kind, h.value))
                out["identity"].append({"kind": h.kind, "value": h.value, "category": h.category,
                                        "weight": round(float(h.weight), 4)})
        if s_inst is not None:
            top = self._memo("x", self.session_model, s_inst, self.session_model.explain)[0]
            if top:
                parts.append("sessions: " + ", ".join(f"#{j + 1} {pool or '?'} ({w:.2f})" for j, pool, w in top))
                out["sessions"] = [{"position": int(j) + 1, "pool": str(pool or "?"), "weight": round(float(w), 4)}
                                   for j, pool, w in top]
        if g_inst is not None:
            feats = self._memo("x", self.segment_model, g_inst, self.segment_model.explain)[0]
            parts.append("segments: " + ", ".join(f"{f} ({d:+.2f})" for f, d in feats))
            out["segments"] = [{"feature": str(f), "change": round(float(d), 4)} for f, d in feats]
        return "; ".join(parts), out

    # ------------------------------------------------------------------ persistence

    def learn_site(self, examples) -> dict:
        """Fold the site's labelled examples (:class:`classifier.identity.site.SiteExample`: pinned
        devices' records and categories) into the identity voter's token model, from the voter as
        trained each time (never on top of an earlier fold); the behaviour models are untouched.
        Returns what was learned (``meta["site"]`` of the new voter; ``{"devices": 0}`` for none)."""
        from classifier.identity.site import fold_site
        if self.identity_model is None:
            return {"devices": 0, "reason": "no identity voter"}
        if self.base_identity_model is None:
            self.base_identity_model = self.identity_model
        examples = list(examples)
        self.identity_model = fold_site(self.base_identity_model, examples) if examples else self.base_identity_model
        return dict(self.identity_model.meta.get("site") or {"devices": 0}) if examples else {"devices": 0}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.session_model.save(folder / "session.safetensors")
        if self.segment_model is not None:
            self.segment_model.save(folder / "segment.safetensors")
        if self.identity_model is not None:
            self.identity_model.save(folder / "identity.safetensors")
        config = asdict(self.config)
        config["voters"] = list(config["voters"])
        doc = {"format": ENGINE_FORMAT, "format_version": ENGINE_VERSION, "config": config,
               "info": self.info, "segment_model": self.segment_model is not None,
               "identity_model": self.identity_model is not None}
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
        if doc.get("identity_model"):
            files.append(folder / "identity.safetensors")
        for f in files:
            if not f.exists():
                raise EngineError(f"{meta_path}: names {f.name}, which is missing")
        session = SessionNBA.load(files[0])
        segment = SegmentLSTMCNN.load(files[1]) if doc["segment_model"] else None
        identity = None
        if doc.get("identity_model"):
            from classifier.identity.model import IdentityModel
            identity = IdentityModel.load(folder / "identity.safetensors")
        if session.config["n"] != config.n:
            raise EngineError(f"{meta_path}: config 'n' is {config.n}, but {files[0].name} reads sequences of "
                              f"{session.config['n']} sessions")
        if segment is not None and segment.config["t"] != config.t:
            raise EngineError(f"{meta_path}: config 't' is {config.t}, but {files[1].name} reads windows of "
                              f"{segment.config['t']} segments")
        return cls(session, segment, config, doc.get("info", {}), resolver, identity)


#: Largest engine.json read.
MAX_ENGINE_JSON_BYTES = 1 << 20
#: EngineConfig field -> (lowest, highest) allowed.
_CONFIG_RANGES = {
    "min_sessions_provisional": (1, 1_000_000), "min_sessions_confirmed": (1, 1_000_000),
    "confirm_confidence": (0.0, 1.0), "threshold": (0.0, 1.0), "segment_threshold": (0.0, 1.0),
    "segment_weight": (0.0, 1.0), "interval": (1e-3, 1e7), "t": (1, 1024), "n": (1, 4096),
    "idle_timeout": (1e-3, 1e7), "identity_weight": (0.0, 1.0), "min_packets_confirmed": (0, 1_000_000),
    "min_identity_kinds": (1, 64), "min_unknown_seconds": (0.0, 1e7),
}
#: The voters an engine may name.
VOTERS = ("identity", "session", "segment")


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
        if name == "voters":
            if not isinstance(v, list) or not v or not all(x in VOTERS for x in v) or len(set(v)) != len(v):
                raise EngineError(f"{path}: config 'voters': expected a list of some of {', '.join(VOTERS)}, "
                                  f"got {shown}")
            v = tuple(v)
        elif isinstance(default, bool):
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
