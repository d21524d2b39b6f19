"""Keeping the controller alive: counted errors, rate-limited logs, event loops that survive
their handlers, and one place to say why the process cannot go on.

No framework import here: the shell uses it under os-ken and under Ryu, the manager and
:mod:`controller_app.ofconn` (the OpenFlow connections) under os-ken.

- :data:`ERRORS` counts errors by kind for the whole process. The app attaches its Prometheus
  counter (``iot_errors_total{kind=...}``) to it; counts made before that are carried over.
- :class:`RateLimitedLog` logs the first few lines of a kind and then at most a few a minute,
  saying how many it held back, so that a switch sending garbage cannot fill the disk.
- :func:`run_event_loop` is the app's event loop. os-ken's own loop re-raises what it takes for
  a thread-stop request, and on its native (thread) hub that is *every* ``Exception``: one
  failing handler ended the loop without a log line, and with it the app. Here a failing
  handler is logged with its traceback (rate-limited), counted, and the loop goes on.
- :func:`fatal` records a failure the process cannot survive (a dead event loop, a listener
  that cannot bind); the manager exits non-zero with that reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as _Counter

LOG = logging.getLogger("controller_app.guard")


class ErrorLedger:
    """Thread-safe error counts by kind, mirrored into a Prometheus counter once attached."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: _Counter = _Counter()
        self._sink = None

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] += n
            sink = self._sink
        if sink is not None:
            try:
                sink.labels(kind).inc(n)
            except Exception:  # noqa: BLE001 - counting must never be the next failure
                pass

    def attach(self, counter) -> None:
        """Mirror every count (past and future) into ``counter`` (a labelled Counter, label: kind)."""
        with self._lock:
            self._sink = counter
            past = dict(self._counts)
        for kind, n in past.items():
            counter.labels(kind).inc(n)

    def detach(self, counter) -> None:
        with self._lock:
            if self._sink is counter:
                self._sink = None

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._counts)


ERRORS = ErrorLedger()


class RateLimitedLog:
    """Per key: the first ``burst`` lines, then one line per ``per / burst`` seconds (token
    bucket); a line that follows suppressed ones says how many (``suppressed=N``)."""

    def __init__(self, logger: logging.Logger, burst: int = 5, per: float = 60.0, max_keys: int = 4096):
        self.logger = logger
        self.burst = max(1, int(burst))
        self.rate = self.burst / float(per)
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: dict = {}          # key -> [tokens, last time, suppressed]

    def allow(self, key) -> tuple[bool, int]:
        """(may this line be logged, how many were suppressed before it)."""
        now = time.monotonic()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) >= self.max_keys:     # bounded: forget the oldest keys
                    for k in list(self._buckets)[: self.max_keys // 4]:
                        del self._buckets[k]
                b = self._buckets[key] = [float(self.burst), now, 0]
            b[0] = min(float(self.burst), b[0] + (now - b[1]) * self.rate)
            b[1] = now
            if b[0] >= 1.0:
                b[0] -= 1.0
                held, b[2] = b[2], 0
                return True, held
            b[2] += 1
            return False, 0

    def allow_each(self, *keys) -> tuple[bool, int]:
        """Like :meth:`allow`, for a line counted under several keys (say, one peer and all
        peers): logged only if every key has room."""
        held = 0
        for key in keys:
            ok, h = self.allow(key)
            if not ok:
                return False, 0
            held += h
        return True, held

    def log(self, level: int, key, msg: str, *args, exc_info=None) -> bool:
        ok, held = self.allow(key)
        if ok:
            if held:
                msg = msg + " (%d similar lines suppressed)"
                args = (*args, held)
            self.logger.log(level, msg, *args, exc_info=exc_info)
        return ok

    def forget(self, key) -> None:
        with self._lock:
            self._buckets.pop(key, None)


class Backoff:
    """Per key (a datapath id, a peer address): ``burst`` attempts, then one per ``interval``
    seconds (token bucket); an attempt with no token left starts a back-off of ``base`` seconds,
    twice as long at each new episode up to ``longest``, during which every attempt is refused.
    The back-off is not lengthened by attempts made during it (a switch that retries on its own
    schedule, as Open vSwitch does, gets back in), and is forgotten once the key's bucket is full
    again (it behaved for ``burst * interval`` seconds)."""

    def __init__(self, burst: int, interval: float, base: float = 1.0, longest: float = 60.0,
                 max_keys: int = 4096):
        self.burst = max(1, int(burst))
        self.interval = float(interval)
        self.base = float(base)
        self.longest = float(longest)
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._state: dict = {}          # key -> [tokens, last, blocked until, penalty, refused]

    def attempt(self, key, now: float | None = None) -> float:
        """0 when this attempt may go on; else the seconds left of the key's back-off."""
        now = time.monotonic() if now is None else now
        with self._lock:
            st = self._state.get(key)
            if st is None:
                if len(self._state) >= self.max_keys:
                    for k in list(self._state)[: self.max_keys // 4]:
                        del self._state[k]
                st = self._state[key] = [float(self.burst), now, 0.0, 0.0, 0]
            st[0] = min(float(self.burst), st[0] + (now - st[1]) / self.interval)
            st[1] = now
            if now < st[2]:
                st[4] += 1
                return st[2] - now
            if st[0] >= float(self.burst):
                st[3] = 0.0                             # behaved long enough: back-offs start over
            if st[0] >= 1.0:
                st[0] -= 1.0
                return 0.0
            st[3] = min(self.longest, st[3] * 2 if st[3] else self.base)
            st[2] = now + st[3]
            st[4] += 1
            return st[3]

    def refused(self, key) -> int:
        """Attempts of ``key`` refused so far."""
        with self._lock:
            st = self._state.get(key)
            return 0 if st is None else st[4]


class FlapLog:
    """The log of a switch that keeps reconnecting, summarised as Open vSwitch rate-limits its
    own: a datapath that comes up a third time, each within ``window`` seconds of the one
    before, is *flapping* (one reconnection, say a reboot, is not); that is logged once, then
    its lines are counted, not written (:meth:`quiet`), and one summary line a ``summary_interval`` says how many
    (``{"event": "switch_flapping", ...}``); ``window`` seconds after its last "up" it is
    stable again, with a last summary."""

    def __init__(self, logger: logging.Logger, window: float = 60.0, summary_interval: float = 60.0):
        self.logger = logger
        self.window = window
        self.summary_interval = summary_interval
        self._lock = threading.Lock()
        self._dp: dict = {}        # dpid -> [last up, flapping since or None, ups, lines held, last summary]

    def up(self, dpid: int, now: float | None = None) -> bool:
        """A switch came up; True when its lines are to be logged (it is not flapping)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            st = self._dp.get(dpid)
            if st is None or now - st[0] > self.window:
                if st is not None and st[1] is not None:
                    self._summary(dpid, st, now, stable=True)
                self._dp[dpid] = [now, None, 1, 0, now]
                return True
            st[0] = now
            st[2] += 1
            if st[1] is None and st[2] < 3:
                return True
            if st[1] is None:
                st[1] = now
                st[4] = now
                self.logger.warning(_json_line("switch_flapping", dpid=f"{dpid:016x}", reconnects=st[2],
                                               window_s=self.window, note="its lines are counted, not logged, "
                                               "until it has been up for window_s; one summary line a "
                                               f"{self.summary_interval:g} s"))
            return False

    def quiet(self, dpid, n: int = 1, now: float | None = None) -> bool:
        """Whether ``n`` lines of ``dpid`` are to be held back (it is flapping); they are counted."""
        if dpid is None:
            return False
        now = time.monotonic() if now is None else now
        with self._lock:
            st = self._dp.get(dpid)
            if st is None or st[1] is None:
                return False
            if now - st[0] > self.window:
                self._summary(dpid, st, now, stable=True)
                st[1] = None
                return False
            st[3] += n
            if now - st[4] >= self.summary_interval:
                self._summary(dpid, st, now, stable=False)
            return True

    def tick(self, now: float | None = None) -> None:
        """Summaries due (call now and then)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for dpid, st in list(self._dp.items()):
                if st[1] is None:
                    if now - st[0] > self.window:
                        del self._dp[dpid]
                    continue
                if now - st[0] > self.window:
                    self._summary(dpid, st, now, stable=True)
                    del self._dp[dpid]
                elif now - st[4] >= self.summary_interval and st[3]:
                    self._summary(dpid, st, now, stable=False)

    def _summary(self, dpid, st, now, stable: bool) -> None:
        self.logger.warning(_json_line("switch_stable" if stable else "switch_flapping", dpid=f"{dpid:016x}",
                                       reconnects=st[2], lines_held=st[3],
                                       seconds=round(now - (st[1] or now), 1)))
        st[3] = 0
        st[4] = now


def _json_line(event: str, **fields) -> str:
    import json
    return json.dumps({"event": event, **fields})


_fatal_lock = threading.Lock()
_fatal: list[str] = []


def fatal(reason: str) -> None:
    """Record a failure the process cannot survive; the manager exits non-zero with it."""
    with _fatal_lock:
        _fatal.append(reason)
    LOG.critical("cannot go on: %s", reason)


def fatal_reason() -> str | None:
    with _fatal_lock:
        return "; ".join(_fatal) if _fatal else None


_handler_log = RateLimitedLog(LOG, burst=5, per=60.0)


def run_event_loop(app, on_error=None) -> None:
    """An os-ken/Ryu app's event loop (``OSKenApp._event_loop``) that survives its handlers.

    Same contract as the framework's: runs until ``app.is_active`` is false and the queue is
    empty; the framework's stop event wakes it. A handler raising an ``Exception`` is logged
    (first few with a traceback, then rate-limited), counted as ``handler`` in :data:`ERRORS`
    and passed to ``on_error(handler_name, event, exc)``; the next handler and event go on.
    Anything else (``SystemExit``, ``KeyboardInterrupt``, a green thread's kill) ends the loop;
    if the app was still active that is recorded with :func:`fatal`."""
    stop = getattr(app, "_event_stop", None)
    try:
        while app.is_active or not app.events.empty():
            ev, state = app.events.get()
            app._events_sem.release()
            if ev is stop:
                continue
            for handler in app.get_handlers(ev, state):
                try:
                    handler(ev)
                except Exception as exc:  # noqa: BLE001 - the whole point: log, count, go on
                    name = getattr(handler, "__name__", repr(handler))
                    # logged before counted: whoever sees the count can find the line
                    _handler_log.log(logging.ERROR, ("handler", name, type(exc).__name__),
                                     "%s: handler %s failed on %s: %s: %s (the event loop goes on)",
                                     app.name, name, type(ev).__name__, type(exc).__name__, _short(exc),
                                     exc_info=exc)
                    ERRORS.count("handler")
                    if on_error is not None:
                        try:
                            on_error(name, ev, exc)
                        except Exception:  # noqa: BLE001
                            pass
    except BaseException as exc:
        if app.is_active:
            fatal(f"the event loop of {app.name} stopped: {type(exc).__name__}: {_short(exc)}")
        raise
    if app.is_active:  # pragma: no cover - the loop only ends when the app is stopped
        fatal(f"the event loop of {app.name} stopped")


def guarded(kind: str, fn, *args, interval: float = 0.0, log: RateLimitedLog | None = None):
    """Call ``fn(*args)``; an ``Exception`` is logged (rate-limited), counted as ``kind`` and
    swallowed. For the body of a background loop, so that one failed round is not the last."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001
        (log or _handler_log).log(logging.ERROR, (kind, type(exc).__name__), "%s failed: %s: %s (retrying)",
                                  kind, type(exc).__name__, _short(exc), exc_info=exc)
        ERRORS.count(kind)
        if interval:
            time.sleep(interval)
        return None


def _short(exc: BaseException, limit: int = 300) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the report
        text = "?"
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["ERRORS", "ErrorLedger", "RateLimitedLog", "fatal", "fatal_reason", "guarded", "run_event_loop"]
