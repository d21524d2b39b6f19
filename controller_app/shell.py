"""The OpenFlow app's shell (the class ``controller_app.IotController`` derives from).

A thin shell around the pure core (:mod:`controller_app.core`): it turns OpenFlow events into
core calls and the core's intents into OpenFlow 1.3 messages (:mod:`controller_app.ofp`). It
also runs the classification worker, the inventory, the HTTP/metrics endpoint and policy
reloads (SIGHUP or a changed file).

The framework is chosen by what is already imported: under Ryu's ``ryu-manager`` (which
imports ``ryu`` before loading apps) the app is a ``RyuApp``; otherwise — the project's own
``ryu-manager`` on os-ken, tests, ``iotclass`` — an os-ken ``OSKenApp``. The app class is
defined in this module because os-ken's and Ryu's managers load only app classes defined in
the module they are given: ``controller_app/__init__.py`` defines it, on top of this one.
"""

from __future__ import annotations

import collections
import importlib
import inspect
import json
import logging
import os
import sys
import threading
import time


def _framework() -> str:
    forced = os.environ.get("IOT_CONTROLLER_FRAMEWORK")
    if forced:
        if forced not in ("os_ken", "ryu"):
            raise ImportError(f"IOT_CONTROLLER_FRAMEWORK={forced!r}: expected os_ken or ryu")
        return forced
    if "ryu.base.app_manager" in sys.modules and "os_ken.base.app_manager" not in sys.modules:
        return "ryu"
    return "os_ken"


FRAMEWORK = _framework()
app_manager = importlib.import_module(f"{FRAMEWORK}.base.app_manager")
cfg = importlib.import_module(f"{FRAMEWORK}.cfg")
ofp_event = importlib.import_module(f"{FRAMEWORK}.controller.ofp_event")
fw_event = importlib.import_module(f"{FRAMEWORK}.controller.event")
fw_handler = importlib.import_module(f"{FRAMEWORK}.controller.handler")
hub = importlib.import_module(f"{FRAMEWORK}.lib.hub")
ofproto_v1_3 = importlib.import_module(f"{FRAMEWORK}.ofproto.ofproto_v1_3")
ofproto_v1_3_parser = importlib.import_module(f"{FRAMEWORK}.ofproto.ofproto_v1_3_parser")
BaseApp = app_manager.OSKenApp if FRAMEWORK == "os_ken" else app_manager.RyuApp
set_ev_cls = fw_handler.set_ev_cls
MAIN_DISPATCHER = fw_handler.MAIN_DISPATCHER
CONFIG_DISPATCHER = fw_handler.CONFIG_DISPATCHER
DEAD_DISPATCHER = fw_handler.DEAD_DISPATCHER

from classifier.capture.decode import decode_frames  # noqa: E402
from classifier.capture.packets import mac_to_int, mac_to_str  # noqa: E402

from controller_app import config as _config  # noqa: E402
from controller_app import fastpath  # noqa: E402
from controller_app import guard  # noqa: E402
from controller_app import ofp  # noqa: E402
from controller_app import web  # noqa: E402
from controller_app.core import Core, PacketInBatch  # noqa: E402
from controller_app.events import EventLog  # noqa: E402
from controller_app.intents import (KIND_MASK, CookieKind, DecideRequest, FlowAdd, FlowDelete,  # noqa: E402
                                    LoadIdentity, MeterAdd, MeterDelete, PacketOut, PrepareWindow, ResolvePools,
                                    cookie)
from controller_app.inventory import Inventory  # noqa: E402
from controller_app.learning import DecisionWorker  # noqa: E402
from controller_app.names import MAX_PENDING, NAME_KINDS, NameBook, harvest_sent  # noqa: E402
from controller_app.observe import Metrics, Observer  # noqa: E402
from controller_app.policy import PolicyError, load_policy  # noqa: E402
from controller_app.poolres import SeenPoolResolver  # noqa: E402
from controller_app.traffic import TrafficHistory, entries_from_stats  # noqa: E402
from classifier.pools.resolver import PoolResolver  # noqa: E402

LOG = logging.getLogger("controller_app")
DEFAULT_ENGINE = _config.DEFAULT_ENGINE


def load_engine_factory(spec: str):
    """``module:function`` -> the function (called with the model path, or None for the default)."""
    mod, _, fn = spec.partition(":")
    if not mod or not fn:
        raise ValueError(f"--engine {spec!r}: expected module:function")
    return getattr(importlib.import_module(mod), fn)


def takes_sessions(engine) -> bool:
    """Whether ``engine`` builds a device's sessions for others and takes them back in
    ``decide`` (the project's engine does): then each decision builds the table once, for the
    allowed-pool prefixes and for the engine; other engines build their own."""
    decide = getattr(engine, "decide", None)
    return callable(getattr(engine, "sessions", None)) and callable(decide) and \
        "sessions" in inspect.signature(decide).parameters


class EventTick(fw_event.EventBase):
    """Timer: decode the pending batch; every ``tick_interval`` also run the core's timer."""


class EventReload(fw_event.EventBase):
    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


class EventResult(fw_event.EventBase):
    def __init__(self, kind, key, result, error):
        super().__init__()
        self.kind, self.key, self.result, self.error = kind, key, result, error


def _structured(kind: str, **fields) -> str:
    return json.dumps({"event": kind, **fields}, default=str, sort_keys=False)


class IotControllerShell(BaseApp):
    """Mirrors learning devices, classifies them and enforces the per-category policy."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _config.register_opts(cfg, cfg.CONF, cli=False)
        self.cfg = _config.from_conf(cfg.CONF)
        engine_spec = self.cfg.engine
        self.policy = load_policy(self.cfg.policy_file)
        try:
            self.engine = load_engine_factory(engine_spec)(self.cfg.model)
        except Exception as exc:
            raise RuntimeError(f"cannot load the classification engine ({engine_spec}, model "
                               f"{self.cfg.model or 'default'}): {type(exc).__name__}: {exc}") from exc
        # an engine whose decide() takes the device's identity records (identity=) gets them
        try:
            import inspect
            params = inspect.signature(self.engine.decide).parameters
            self._engine_identity = "identity" in params
            # an engine that can leave the slow part of an explanation for later
            # (explain_later=, completed by engine.explained) has it done after enforcement
            self._explain_later = "explain_later" in params and callable(getattr(self.engine, "explained", None))
        except (TypeError, ValueError):
            self._engine_identity = self._explain_later = False
        try:  # decisions run beside the packet-in thread: one intra-op thread for inference
            import torch
            torch.set_num_threads(1)
        except ImportError:
            pass
        self.core = Core(self.cfg.core, self.policy)
        # Load the decoder's compiled kernel now, not on the first packet-in (about a second).
        decode_frames([bytes(64)], [0], [64])
        self.inventory = Inventory(self.cfg.inventory_db, log=lambda msg: LOG.warning(
            _structured("file_permissions", file=self.cfg.inventory_db, message=msg)))
        restored = self.inventory.load()
        self.core.restore(restored, time.time_ns())
        #: MACs the inventory knows: a device not among them is new (an event)
        self._known = {r["mac"] for r in restored} | set(self.inventory.macs())
        self.names = NameBook()
        self.names.load(*self.inventory.names(NAME_KINDS))
        self._addresses: list = []       #: addresses shown, not written to the inventory yet
        self._worker_addresses = collections.deque(maxlen=MAX_PENDING)   #: from the decision worker
        # One IP-pool resolver for the engine (session pools) and for the policy's allow_pools
        # (pool -> prefixes); both run on the worker thread, never on the event loop.
        self.pools = PoolResolver(mode=self.cfg.pool_mode, cache_path=self.cfg.pool_cache, **self.cfg.rdap_options())
        if hasattr(self.engine, "resolver"):
            self.engine.resolver = self.pools
        self.resolver = SeenPoolResolver(pool_table=self.pools.resolve_table)
        self._share_sessions = takes_sessions(self.engine)
        idle = getattr(getattr(self.engine, "config", None), "idle_timeout", None)
        if self._share_sessions and isinstance(idle, (int, float)):
            # each decision request carries the device's sessions, kept from request to request
            self.core.learner.session_idle = float(idle)
        schedule = getattr(self.engine, "window_schedule", None)
        if callable(getattr(self.engine, "prepare", None)) and isinstance(schedule, tuple) and schedule[0] > 0:
            # the engine votes on a device's new segment window as soon as it moves, not when the
            # decision that reads it is asked (core.decisions.DecisionManager.prepare)
            self.core.settings.prepare_every, self.core.settings.prepare_from = float(schedule[0]), int(schedule[1])
        self.metrics = Metrics()
        guard.ERRORS.attach(self.metrics.errors)      # framework and connection errors count here too
        self.webhook = None
        if self.cfg.webhook_url:
            from controller_app.webhook import Webhook
            self.webhook = Webhook(self.cfg.webhook_url)
        self.timeline = EventLog(sink=self.webhook.send if self.webhook is not None else None,
                               counter=self.metrics.events)
        self.timeline.load(self.inventory.recent_events(1000))
        #: the engine's learning period in real seconds (a full segment window; the page's estimate)
        ec = getattr(self.engine, "config", None)
        window = float(getattr(ec, "interval", 300.0)) * int(getattr(ec, "t", 6)) if ec is not None else 1800.0
        self.learning_window_s = window / self.cfg.core.time_scale
        #: the site's pinned categories the engine last learned from (see _site_changed)
        self._site_pins = None
        self.observer = Observer(self.metrics, self.cfg.inventory_db, limits=self.cfg.http_limits)
        self.traffic = TrafficHistory()
        self.observer.web = web.from_config(self.cfg, self.observer.view, inventory=self.inventory,
                                            reload=self.request_policy_reload, traffic=self.traffic,
                                            metrics=self.metrics, names=self.names, events=self.timeline)
        self._last_traffic = time.monotonic()
        self._switch_error_log = guard.RateLimitedLog(LOG, burst=5, per=60.0)
        #: a switch that keeps reconnecting: its switch_up/down and rule lines summarised
        self._flaps = guard.FlapLog(LOG)
        self.datapaths: dict = {}
        self._batch: list = []
        self._batch_lock = threading.Lock()
        self._flush_requested = False
        self._early: list = []
        self._drained = threading.Condition()
        self._brick = None
        self._last_flush = time.monotonic()
        self._last_tick = 0.0
        self._last_inventory = time.monotonic()
        self._last_rate = (time.monotonic(), 0)
        self._policy_mtime = self._mtime()
        self._last_watch = time.monotonic()
        self._running = True
        self.http_port = None
        self.worker = DecisionWorker(self._deliver)
        LOG.info(_structured("startup", framework=FRAMEWORK, policy=self.cfg.policy_file,
                             policy_digest=self.policy.digest, engine=engine_spec,
                             model=getattr(self.engine, "version", "?"), inventory=self.cfg.inventory_db,
                             restored_devices=len(restored), time_scale=self.cfg.core.time_scale))

    # ------------------------------------------------------------------ life cycle

    def start(self):
        t = super().start()
        self._attach_packet_in_handler()
        if self.cfg.http_port >= 0:
            self.http_port = self.observer.start(self.cfg.http_host, self.cfg.http_port)
            LOG.info(_structured("http", url=f"http://{self.cfg.http_host}:{self.http_port}/status",
                                 page=f"http://{self.cfg.http_host}:{self.http_port}/ui/",
                                 pins="on" if self.cfg.web_pins else "off"))
        self.threads.append(hub.spawn(self._ticker))
        self._publish()
        self._site_changed("start")
        return t

    def _event_loop(self):
        # The framework's loop ends on the first failing handler under os-ken's thread hub
        # (it takes every Exception for a stop request), silently; this one logs, counts
        # (iot_errors_total{kind="handler"}) and goes on. See controller_app.guard.
        guard.run_event_loop(self)

    def _ticker(self):
        while self._running and self.is_active:
            hub.sleep(self.cfg.flush_interval)
            if self._running and self.is_active:
                guard.guarded("ticker", self.send_event, self.name, EventTick(), interval=1.0)

    def request_policy_reload(self, reason: str = "SIGHUP") -> None:
        """Ask the event loop to reload the policy (safe from a signal handler)."""
        self.send_event(self.name, EventReload(reason))

    def close(self):
        if not self._running:
            return
        self._running = False
        if self._brick is not None:
            try:
                self._brick.unregister_handler(ofp_event.EventOFPPacketIn, self._packet_in)
            except (KeyError, ValueError):
                pass
        with self._drained:
            self._drained.notify_all()
        try:
            self._flush()
        except Exception:  # noqa: BLE001 - closing: log and go on
            LOG.exception("flushing packet-ins at close")
        self.worker.stop()
        try:
            self._write_inventory()
        except Exception:  # noqa: BLE001
            LOG.exception("writing the inventory at close")
        if self.webhook is not None:
            self.webhook.stop()
        self.observer.stop()
        guard.ERRORS.detach(self.metrics.errors)
        self.inventory.close()
        self.pools.close()
        LOG.info(_structured("shutdown", devices=len(self.core.devices)))

    # ------------------------------------------------------------------ intents -> switches

    def _run(self, intents) -> None:
        for it in intents:
            if isinstance(it, DecideRequest):
                if not self.worker.submit("decide", it.mac, self._decide, it):
                    self.core.decide_dropped(it.mac, time.time_ns())     # asked again later, never dropped
            elif isinstance(it, PrepareWindow):
                # optional: when the worker is busy the decision computes the vote itself
                self.worker.submit("prepare", it.mac, self._prepare, it)
            elif isinstance(it, ResolvePools):
                if not self.worker.submit("pools", it.mac, self._resolve, it):
                    self.core.pools_dropped(it.mac, time.time_ns())
            elif isinstance(it, LoadIdentity):
                self._load_identity(it.mac)
            else:
                dp = self.datapaths.get(it.dpid)
                if dp is None:
                    continue
                try:
                    dp.send_msg(ofp.to_message(dp, it))
                except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
                    self.metrics.errors.labels("send").inc()
                    LOG.error(_structured("send_error", dpid=f"{it.dpid:016x}", error=str(exc),
                                          intent=ofp.describe(it)))
                    continue
                if isinstance(it, (FlowAdd, FlowDelete, MeterAdd, MeterDelete)):
                    d = ofp.describe(it)
                    self.metrics.rule_changes.labels(d["op"]).inc()
                    if not self._flaps.quiet(it.dpid):
                        LOG.info(_structured("rule", **d))
                elif isinstance(it, PacketOut):
                    LOG.debug(_structured("packet_out", **ofp.describe(it)))

    def _load_identity(self, mac: int) -> None:
        """A device about to be read for identity again gets back the values the inventory holds
        (one indexed read, on the event loop, before any new value of it can arrive)."""
        try:
            rows = self.inventory.identity_of(mac)
        except Exception as exc:  # noqa: BLE001 - the device is decided on what it says from now on
            self.metrics.errors.labels("inventory").inc()
            LOG.error(_structured("inventory_error", error=str(exc), mac=mac_to_str(mac)))
            return
        if rows:
            self.core.identity_loaded(mac, rows, time.time_ns())

    def _write_inventory(self) -> None:
        """Forgotten devices out; every device's state, the new identity values, addresses and
        timeline events in (one transaction)."""
        forgotten = self.core.take_forgotten()
        self.inventory.forget(forgotten)
        self.names.forget(forgotten)
        identity = self.core.take_identity()
        self._take_addresses()
        addresses, self._addresses = self._addresses, []
        self.names.add_identity(identity)
        events = self.timeline.take_pending()
        try:
            self.inventory.upsert_devices(list(self.core.devices.values()), identity, addresses, events)
        except Exception:
            self.core.untake_identity(identity)       # written with the next batch
            self.timeline.untake(events)
            self._addresses[:0] = addresses[:MAX_PENDING]
            raise

    def _take_addresses(self) -> None:
        """Addresses read since the last tick (from identity packets on the event loop, from the
        packets of each decision in the worker): to the page at once, to the inventory with the
        next write (at most names.MAX_PENDING waiting)."""
        got = self.core.take_addresses()
        while self._worker_addresses:
            mac, address, t = self._worker_addresses.popleft()
            if mac in self.core.devices:
                got.append((mac, address, self.core.mirror.controller_time(t)))
        if got:
            self.names.add_addresses(got)
            self._addresses += got[:max(0, MAX_PENDING - len(self._addresses))]

    # ------------------------------------------------------------------ worker jobs (worker thread)

    def _explained(self, d, decision_id: int):
        """(worker thread) Decision ``d`` completed, with the id it was recorded under."""
        return self.engine.explained(d), decision_id

    def _prepare(self, req: PrepareWindow) -> bool:
        """(worker thread) The engine's vote on the device's new segment window, ahead of its
        next decision (it runs before any decision queued after it: one worker, in order)."""
        return self.engine.prepare(req.packets, req.mac, req.now_ns)

    def _decide(self, req: DecideRequest):
        sessions = req.sessions
        if sessions is None and self._share_sessions:
            sessions = self.engine.sessions(req.packets, req.mac)
        try:
            self.resolver.observe(req.mac, req.packets, sessions)   # fills the sessions' pools, vectorised
        except Exception:  # noqa: BLE001 - pools are secondary to the decision
            LOG.exception("pool resolver: observe failed for %s", mac_to_str(req.mac))
        kwargs = {}
        if sessions is not None:
            kwargs["sessions"] = sessions
        if self._engine_identity and req.identity is not None:
            kwargs["identity"] = req.identity
        if self._explain_later:
            kwargs["explain_later"] = True
        decision = self.engine.decide(req.packets, req.mac, req.now_ns, **kwargs)
        try:        # where the device is: the source addresses of its packets (here, off the event loop)
            self._worker_addresses.extend(harvest_sent(req.packets, req.mac)[:8])
        except Exception:  # noqa: BLE001 - addresses are secondary to the decision
            LOG.exception("addresses of %s", mac_to_str(req.mac))
        return decision

    # ------------------------------------------------------------------ the site teaches the engine

    def _site_changed(self, reason: str) -> None:
        """The policy's category pins are the site's labelled examples: when they change (and at
        start), the engine folds them into its identity voter (``engine.learn_site``) in the
        decision worker — off the event loop, between two decisions — from the identity values
        the inventory holds for the pinned devices. Engines without ``learn_site`` are left alone."""
        if getattr(self.engine, "learn_site", None) is None:
            return
        from classifier.identity.site import MAX_SITE_DEVICES
        pins = {mac: ov.category for mac, ov in self.core.policy.overrides.items()
                if ov.category is not None and ov.category != "unknown"}
        if pins == self._site_pins:
            return
        if len(pins) > MAX_SITE_DEVICES:
            pins = dict(sorted(pins.items())[:MAX_SITE_DEVICES])
        try:
            self._write_inventory()           # the pinned devices' last values are in before they are read
        except Exception as exc:  # noqa: BLE001 - the values written so far are learned
            LOG.error(_structured("inventory_error", error=str(exc)))
        if self.worker.submit("site", 0, self._learn_site, dict(pins), reason):
            self._site_pins = pins
        else:
            self._site_pins = None            # asked again at the next reload

    def _learn_site(self, pins: dict, reason: str):
        """(worker thread) Read the pinned devices' identity values; fold them into the engine."""
        from classifier.identity.site import MAX_SITE_RECORDS, SiteExample
        t0 = time.monotonic()
        examples = []
        for mac, cat in sorted(pins.items()):
            rows = self.inventory.identity_of(mac)[:MAX_SITE_RECORDS]
            examples.append(SiteExample(mac, cat, tuple(rows)))
        learned = self.engine.learn_site(examples)
        return {"reason": reason, "pins": len(pins), "seconds": round(time.monotonic() - t0, 3), **learned}

    def _decision_events(self, mac: str, was: tuple, d, enforced) -> None:
        """Timeline events for a decision: category changed (its first one too), confirmed, unknown."""
        cat0, stage0 = was
        common = {"stage": d.stage, "confidence": round(float(d.confidence), 3), "enforced": enforced}
        if d.stage == "unknown" or d.category == "unknown":
            if stage0 != "unknown":
                self.timeline.emit("unknown", mac, **{"from": cat0}, **common)
            return
        if d.category != cat0:
            self.timeline.emit("category_changed", mac, **{"from": cat0, "to": d.category}, **common)
        if d.stage == "confirmed" and (stage0 != "confirmed" or d.category != cat0):
            self.timeline.emit("confirmed", mac, to=d.category, **common)

    def _resolve(self, req: ResolvePools):
        out, errors = {}, {}
        for pool in req.pools:
            try:
                out[pool] = [str(n) for n in self.resolver.prefixes(pool, req.mac)]
            except Exception as exc:  # noqa: BLE001 - reported per pool, the rest go on
                errors[pool] = f"{type(exc).__name__}: {exc}"
                out[pool] = []
        return out, errors

    def _deliver(self, kind, key, result, error) -> None:
        if self._running:
            self.send_event(self.name, EventResult(kind, key, result, error))

    @set_ev_cls(EventResult)
    def _on_result(self, ev):
        now = time.time_ns()
        mac = ev.key
        if ev.kind == "decide":
            if ev.error is not None:
                self.metrics.errors.labels("decide").inc()
                LOG.error(_structured("decide_error", mac=mac_to_str(mac), error=repr(ev.error)))
                self.core.decide_dropped(mac, now, failed=True)
                return
            d = ev.result
            if d is None:       # not enough evidence yet: the core counts it on the device
                self.core.decision_made(mac, None, now)
                return
            if self.core.defers(mac, d, now):     # unknown while its identity probes are outstanding
                self.core.decision_made(mac, d, now)
                LOG.info(_structured("decision_deferred", mac=mac_to_str(mac), category=d.category, stage=d.stage,
                                     reason="identity probes outstanding", explanation=d.explanation))
                return
            self.metrics.decisions.labels(d.category, d.stage).inc()
            dev = self.core.devices.get(mac)
            was = (dev.category, dev.stage) if dev is not None else (None, None)
            before = dev.policy_action.describe() if dev is not None and dev.policy_action is not None else None
            intents = self.core.decision_made(mac, d, now)
            after = dev.policy_action.describe() if dev is not None and dev.policy_action is not None else None
            treatment = self.core.rules.treatment(dev) if dev is not None and after is not None else None
            decision_id = None      # committed before it is logged as made: a crash loses no logged decision
            identity = self.core.take_identity()     # the values it was made on are committed with it
            self.names.add_identity(identity)
            try:
                decision_id = self.inventory.record_decision(mac, now, d, dev, identity)
            except Exception as exc:  # noqa: BLE001 - the inventory must not stop enforcement
                self.core.untake_identity(identity)
                self.metrics.errors.labels("inventory").inc()
                LOG.error(_structured("inventory_error", error=str(exc)))
            LOG.info(_structured("decision", mac=mac_to_str(mac), category=d.category,
                                 confidence=round(float(d.confidence), 4), stage=d.stage, model=d.model,
                                 explanation=d.explanation, evidence=d.evidence,
                                 vouching=list(getattr(d, "vouching", ()) or ()),
                                 claims_only=bool(dev and dev.claims_only), enforced_before=before, enforced=after,
                                 action_basis=treatment.basis if treatment is not None else None,
                                 mirroring=bool(dev and dev.mirroring), decision_id=decision_id))
            self._decision_events(mac_to_str(mac), was, d, after)
            self._run(intents)
            if getattr(d, "pending", None) is not None and decision_id is not None:
                # the rest of its explanation (the segment model's occlusion: several times the
                # decision's own cost), on the worker now that the rules are sent
                if not self.worker.submit("explain", mac, self._explained, d, decision_id):
                    LOG.info(_structured("explanation_skipped", mac=mac_to_str(mac), decision_id=decision_id,
                                         reason="decision worker busy"))
        elif ev.kind == "prepare":
            if ev.error is not None:        # the decision computes the vote itself: nothing is lost
                self.metrics.errors.labels("prepare").inc()
                LOG.error(_structured("prepare_error", mac=mac_to_str(mac), error=repr(ev.error)))
        elif ev.kind == "explain":
            if ev.error is not None:
                self.metrics.errors.labels("explain").inc()
                LOG.error(_structured("explain_error", mac=mac_to_str(mac), error=repr(ev.error)))
                return
            d, decision_id = ev.result
            try:
                self.inventory.complete_explanation(mac, decision_id, d.explanation, d.evidence)
            except Exception as exc:  # noqa: BLE001 - the inventory must not stop enforcement
                self.metrics.errors.labels("inventory").inc()
                LOG.error(_structured("inventory_error", error=str(exc)))
            LOG.info(_structured("decision_explained", mac=mac_to_str(mac), decision_id=decision_id,
                                 explanation=d.explanation))
        elif ev.kind == "site":
            if ev.error is not None:
                self.metrics.errors.labels("site").inc()
                self._site_pins = None
                LOG.error(_structured("site_error", error=repr(ev.error)))
            else:
                LOG.info(_structured("site_learned", **ev.result))
        elif ev.kind == "pools":
            mapping, errors = ev.result if ev.error is None else ({}, {"*": repr(ev.error)})
            for pool, err in errors.items():
                self.metrics.errors.labels("pools").inc()
                LOG.error(_structured("pool_error", mac=mac_to_str(mac), pool=pool, error=err))
            self._run(self.core.pools_resolved(mac, mapping, now))

    # ------------------------------------------------------------------ switches

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev):
        dp = ev.datapath
        now = time.time_ns()
        if ev.state == MAIN_DISPATCHER:
            ofpx = dp.ofproto
            ports = [p.port_no for p in (dp.ports or {}).values()
                     if not (p.config & ofpx.OFPPC_PORT_DOWN) and not (p.state & ofpx.OFPPS_LINK_DOWN)]
            self.datapaths[dp.id] = dp
            if self._flaps.up(dp.id):
                LOG.info(_structured("switch_up", dpid=f"{dp.id:016x}", ports=sorted(ports),
                                     address=str(dp.address)))
                self.timeline.emit("switch_up", None, dpid=f"{dp.id:016x}", ports=len(ports))
            self._run(self.core.switch_up(dp.id, ports, now))
        elif ev.state == DEAD_DISPATCHER and dp.id is not None and self.datapaths.get(dp.id) is dp:
            self._flush()
            del self.datapaths[dp.id]
            if not self._flaps.quiet(dp.id):
                LOG.info(_structured("switch_down", dpid=f"{dp.id:016x}"))
                self.timeline.emit("switch_down", None, dpid=f"{dp.id:016x}",
                                 devices=sum(1 for d in self.core.devices.values() if d.dpid == dp.id))
            self._run(self.core.switch_down(dp.id, now))

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        msg = ev.msg
        dp, ofpx, desc = msg.datapath, msg.datapath.ofproto, msg.desc
        up = (msg.reason != ofpx.OFPPR_DELETE and not (desc.config & ofpx.OFPPC_PORT_DOWN)
              and not (desc.state & ofpx.OFPPS_LINK_DOWN))
        self._run(self.core.port_changed(dp.id, desc.port_no, up, time.time_ns()))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _flow_removed(self, ev):
        msg = ev.msg
        m = dict(msg.match.items())
        src = m.get("eth_src")
        try:
            src = mac_to_int(src) if isinstance(src, str) else None
        except ValueError:
            src = None
        self._run(self.core.flow_removed(msg.datapath.id, msg.table_id, msg.cookie, m.get("in_port"), src,
                                         time.time_ns()))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        msg = ev.msg
        dpid = msg.datapath.id
        self.core.switch_error(dpid or 0, msg.type, msg.code, time.time_ns())
        self.metrics.errors.labels("switch").inc()
        ok, held = self._switch_error_log.allow_each(dpid, "all")   # all counted; a few a minute logged
        if ok:
            LOG.error(_structured("switch_error", dpid=f"{dpid or 0:016x}", type=msg.type, code=msg.code,
                                  data=bytes(msg.data[:64]).hex() if msg.data else "", suppressed=held))

    # ------------------------------------------------------------------ packet-ins: append, decode in batches
    #
    # os-ken (like Ryu) hands an OpenFlow event to other apps through a bounded queue and a
    # thread switch, but calls the ``ofp_event`` service's own handlers directly in the
    # switch's receive thread. The packet-in handler only appends to a list, so it is
    # registered there (see ``start``): no queue, no thread switch per packet-in. The app's
    # event loop decodes the list in batches. When the list runs far ahead of the decoder
    # the receive thread waits for it, which pushes back on the switch through TCP, as the
    # framework's own queue would.

    @fw_handler.set_ev_handler(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        msg = ev.msg
        in_port = getattr(msg, "in_port", None)
        if in_port is None:
            try:
                in_port = msg.match.get("in_port", 0)
            except Exception:  # noqa: BLE001 - a match the parser cannot read: port 0, counted as unknown
                in_port = 0
        self._add_rows(((msg.datapath.id, in_port, msg.cookie, msg.total_len, time.time_ns(), msg.data),))

    def _packet_ins_bulk(self, dpid, rows) -> None:
        """Packet-ins read in place by the connection's receive loop (ofconn's bulk path): the
        same rows as :meth:`_packet_in` appends, one arrival time for the chunk read at once."""
        now = time.time_ns()
        self._add_rows([(dpid, in_port, ck, total, now, data) for in_port, ck, total, data in rows])

    def _add_rows(self, rows) -> None:
        """Packet-in rows into the batch the next flush decodes (from either path)."""
        with self._batch_lock:                   # _flush swaps the list under it: no row lands in a
            batch = self._batch                  # list already decoded
            batch.extend(rows)
            n = len(batch)
        if n >= self.cfg.batch_size:
            self._batch_full(n)

    def _batch_full(self, n: int) -> None:
        if not self._flush_requested:
            self._flush_requested = True
            self.send_event(self.name, EventTick())
        if n >= 4 * self.cfg.batch_size and self.is_active:
            with self._drained:
                self._drained.wait_for(lambda: len(self._batch) < 2 * self.cfg.batch_size or not self.is_active,
                                       timeout=1.0)

    def _attach_packet_in_handler(self) -> None:
        fastpath.install(ofproto_v1_3_parser, ofproto_v1_3)
        brick = app_manager.lookup_service_brick("ofp_event")
        if brick is None:
            raise RuntimeError("the OpenFlow service (ofp_event) is not running")
        brick.register_handler(ofp_event.EventOFPPacketIn, self._packet_in)
        self._brick = brick
        conns = sys.modules.get("controller_app.ofconn")
        reg = conns.current() if conns is not None else None
        if reg is not None:
            reg.take_packet_ins(self._packet_ins_bulk, self._packet_in)

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        self._flush_requested = False
        if not self._batch and not self._early:
            return
        with self._batch_lock:
            rows = self._batch
            self._batch = []
        with self._drained:
            self._drained.notify_all()
        rows = self._hold_early(rows)
        if not rows:
            return
        try:
            batch = PacketInBatch.from_rows(rows)
            intents = self.core.packet_ins(batch, time.time_ns())
        except Exception as exc:  # noqa: BLE001 - a bad batch is counted and dropped; the app goes on
            self.metrics.errors.labels("packet_in_batch").inc()
            LOG.error(_structured("packet_in_error", packets=len(rows), error=f"{type(exc).__name__}: {exc}"))
            return
        self._run(intents)

    def _hold_early(self, rows: list) -> list:
        """Packet-ins reach the batch straight from a switch's receive thread, while its
        "switch up" goes through the event queue: rows of a switch the app does not know yet
        wait (up to 2 s) for the next flush instead of being dropped as unknown."""
        held, self._early = self._early, []
        if held:
            rows = held + rows
        dpids = {r[0] for r in rows}
        if dpids <= self.datapaths.keys():
            return rows
        limit = time.time_ns() - 2_000_000_000
        keep = []
        for r in rows:
            if r[0] in self.datapaths:
                keep.append(r)
            elif r[4] >= limit:
                self._early.append(r)
            else:
                keep.append(r)          # too old: the core counts it as from an unknown switch
        return keep

    @set_ev_cls(EventTick)
    def _tick(self, ev):
        now_m = time.monotonic()
        # a full batch asked for this tick (_batch_full): decode it now, however recent the last
        # flush (waiting for the interval held the receive thread back: one batch per 50 ms)
        if self._flush_requested or now_m - self._last_flush >= self.cfg.flush_interval * 0.5:
            self._flush()
        if now_m - self._last_tick >= self.cfg.tick_interval:
            self._last_tick = now_m
            self._run(self.core.timer(time.time_ns()))
            self._flaps.tick(now_m)
            self._publish()
        if now_m - self._last_inventory >= self.cfg.inventory_flush_interval:
            self._last_inventory = now_m
            try:
                self._write_inventory()
            except Exception as exc:  # noqa: BLE001
                self.metrics.errors.labels("inventory").inc()
                LOG.error(_structured("inventory_error", error=str(exc)))
        if self.cfg.traffic_interval > 0 and now_m - self._last_traffic >= self.cfg.traffic_interval:
            self._last_traffic = now_m
            self._request_traffic()
        if self.cfg.policy_watch_interval > 0 and now_m - self._last_watch >= self.cfg.policy_watch_interval:
            self._last_watch = now_m
            mt = self._mtime()
            if mt != self._policy_mtime:
                self._policy_mtime = mt
                self._reload("file changed")

    def _publish(self) -> None:
        snap = self.core.snapshot()
        now_m, n = time.monotonic(), self.core.counters.get("packet_ins", 0)
        t0, n0 = self._last_rate
        rate = (n - n0) / (now_m - t0) if now_m > t0 else 0.0
        self._last_rate = (now_m, n)
        self.metrics.packet_in_rate.set(rate)
        self.metrics.sync_counters(self.core.counters)
        self.metrics.learning.set(snap["learning"])
        self.metrics.switches.set(len(snap["switches"]))
        status = {"framework": FRAMEWORK, "switches": [f"{d:016x}" for d in snap["switches"]],
                  "devices": snap["devices"], "learning": snap["learning"], "links": snap["links"],
                  "packet_ins_per_second": round(rate, 1),
                  "devices_by_category_stage": [{"category": c, "stage": s, "devices": k}
                                                for (c, s), k in sorted(snap["by_category_stage"].items())],
                  "counters": snap["counters"], "policy": {"source": self.policy.source,
                                                           "digest": self.core.policy.digest},
                  "model": getattr(self.engine, "version", None), "time_scale": self.cfg.core.time_scale}
        connections = _openflow_connections()
        if connections is not None:
            status["openflow"] = connections
        if self.observer.server is not None:
            status["http"] = self.observer.server.stats()
        if self.webhook is not None:
            status["webhook"] = self.webhook.stats()
        now = time.time()
        status["published"] = round(now, 3)        # the page tells a stale snapshot by this
        status["events_last"] = self.timeline.last_id()
        status["learning_window_s"] = self.learning_window_s
        self._new_devices()
        self._take_addresses()
        devices, rules = web.device_records(self.core, self.cfg.core, self.names, now)
        self.metrics.set_devices(web.devices_by_action(devices))
        self.observer.publish(status, devices, self.core.policy.summary(), rules)

    def _new_devices(self) -> None:
        """A ``new_device`` event for each device the inventory never held (gateways aside)."""
        devices = self.core.devices
        if len(devices) <= len(self._known) and devices.keys() <= self._known:
            return
        for mac in devices.keys() - self._known:
            self._known.add(mac)
            dev = devices[mac]
            if not dev.gateway:
                self.timeline.emit("new_device", mac_to_str(mac), dpid=None if dev.dpid is None else f"{dev.dpid:016x}",
                                 port=dev.port)

    # ------------------------------------------------------------------ traffic (the switches' counters)

    def _request_traffic(self) -> None:
        """Ask every switch for its per-host forwarding entries' counters (see controller_app.traffic)."""
        for dp in list(self.datapaths.values()):
            ofpx, parser = dp.ofproto, dp.ofproto_parser
            try:
                dp.send_msg(parser.OFPFlowStatsRequest(dp, 0, ofpx.OFPTT_ALL, ofpx.OFPP_ANY, ofpx.OFPG_ANY,
                                                       cookie(CookieKind.HOST), KIND_MASK, parser.OFPMatch()))
            except Exception as exc:  # noqa: BLE001 - counters are secondary
                self.metrics.errors.labels("send").inc()
                LOG.error(_structured("send_error", dpid=f"{dp.id:016x}", error=str(exc), intent="flow_stats"))

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats(self, ev):
        msg = ev.msg
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        devices = self.core.devices

        def edge_of(mac):
            dev = devices.get(mac)
            return None if dev is None else dev.dpid
        self.traffic.add(msg.datapath.id, entries_from_stats(msg.body), time.time(), more, edge_of)

    # ------------------------------------------------------------------ policy reload

    def _mtime(self):
        try:
            st = os.stat(self.cfg.policy_file)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    @set_ev_cls(EventReload)
    def _on_reload(self, ev):
        self._reload(ev.reason)

    def _reload(self, reason: str) -> None:
        from controller_app.pins import PinError, policy_lock
        try:
            # a pin or an editor under the policy's lock (controller_app.pins) is not read half-way:
            # the lock is tried, not waited for; the file watcher tries again at its next check
            with policy_lock(self.cfg.policy_file, shared=True, timeout=0, create=False) as held:
                if not held:
                    self._policy_mtime = None
                    LOG.info(_structured("policy_reload_deferred", reason=reason, file=self.cfg.policy_file,
                                         why="the policy file is locked for editing"))
                    return
                pol = load_policy(self.cfg.policy_file)
        except PinError as exc:            # the lock file cannot be opened: read without it
            LOG.warning(_structured("policy_lock_error", error=str(exc)))
            try:
                pol = load_policy(self.cfg.policy_file)
            except PolicyError as exc2:
                return self._rejected(reason, exc2)
        except PolicyError as exc:
            return self._rejected(reason, exc)
        except Exception as exc:  # noqa: BLE001 - a loader failure keeps the policy in force, like a bad file
            self.metrics.errors.labels("policy").inc()
            LOG.error(_structured("policy_rejected", reason=reason, file=self.cfg.policy_file,
                                  problems=[f"{type(exc).__name__}: {str(exc)[:300]}"], kept=self.core.policy.digest))
            return
        if pol.digest == self.core.policy.digest:
            LOG.info(_structured("policy_unchanged", reason=reason, digest=pol.digest))
            self.metrics.policy_reloads.labels("unchanged").inc()
            return
        old = self.core.policy.digest
        self.policy = pol
        intents = self.core.policy_reloaded(pol, time.time_ns())
        changes = sum(1 for i in intents if isinstance(i, (FlowAdd, FlowDelete, MeterAdd, MeterDelete)))
        LOG.info(_structured("policy_reloaded", reason=reason, file=self.cfg.policy_file, digest=pol.digest,
                             previous=old, rule_changes=changes))
        self.metrics.policy_reloads.labels("applied").inc()
        self.timeline.emit("policy_reloaded", None, reason=reason[:200], digest=pol.digest, previous=old,
                         rule_changes=changes)
        self._run(intents)
        self._publish()
        self._site_changed(reason)

    def _rejected(self, reason: str, exc: PolicyError) -> None:
        self.metrics.errors.labels("policy").inc()
        LOG.error(_structured("policy_rejected", reason=reason, file=self.cfg.policy_file,
                              problems=exc.problems, kept=self.core.policy.digest))
        self.metrics.policy_reloads.labels("rejected").inc()


def _openflow_connections():
    """The connection registry's summary (``/status`` section ``openflow``) when the project's
    ``ryu-manager`` runs the OpenFlow side (controller_app.ofconn); None otherwise."""
    mod = sys.modules.get("controller_app.ofconn")
    reg = mod.current() if mod is not None else None
    return reg.status() if reg is not None else None


__all__ = ["IotControllerShell", "FRAMEWORK"]
