"""Alerts to a webhook: each timeline event (:mod:`controller_app.events`) as a JSON POST.

``--webhook-url URL`` (http or https). One background thread sends the events in order, each as
its own POST (``Content-Type: application/json``; the body is the event object), through urllib3
(connection pool, time-outs, and its ``Retry``: a failure — no connection, a time-out, a 5xx or
429 answer — is retried with exponential back-off and jitter, at most ``max_backoff`` seconds
apart, honouring ``Retry-After``, ``max_attempts`` times in all; another 4xx is not retried).
The queue is bounded (``max_queue``): while the receiver is down, events beyond it are dropped
and counted, never waited for — the controller's event loop only ever appends. ``stats()`` says
how many were sent, dropped, given up and are waiting (``/status`` → ``webhook``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.parse

import urllib3
from urllib3.util.retry import Retry

LOG = logging.getLogger("controller_app.webhook")
RETRY_STATUS = (429, 500, 502, 503, 504)


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host; ValueError naming what is wrong."""
    p = urllib.parse.urlsplit(url or "")
    if p.scheme not in ("http", "https"):
        raise ValueError(f"--webhook-url {url!r}: expected an http:// or https:// URL")
    if not p.hostname:
        raise ValueError(f"--webhook-url {url!r}: no host name")
    return url


class Webhook:
    def __init__(self, url: str, max_queue: int = 1000, timeout: float = 5.0, max_attempts: int = 6,
                 backoff: float = 1.0, max_backoff: float = 60.0, name: str = "iot-webhook"):
        self.url = check_url(url)
        self._q: queue.Queue = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.counts = {"sent": 0, "dropped": 0, "failed": 0, "retries": 0}
        retry = Retry(total=max(0, int(max_attempts) - 1), backoff_factor=backoff, backoff_max=max_backoff,
                      backoff_jitter=0.2 * backoff, status_forcelist=RETRY_STATUS,
                      allowed_methods=frozenset({"POST"}), raise_on_status=False, raise_on_redirect=False,
                      respect_retry_after_header=True, redirect=0)
        self._pool = urllib3.PoolManager(retries=retry, timeout=urllib3.Timeout(total=timeout), maxsize=1)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def send(self, event: dict) -> bool:
        """Queue ``event``; False (counted as dropped) when the queue is full. Never blocks."""
        try:
            self._q.put_nowait(event)
            return True
        except queue.Full:
            with self._lock:
                self.counts["dropped"] += 1
            return False

    def stats(self) -> dict:
        with self._lock:
            return {**self.counts, "queued": self._q.qsize()}

    def _deliver(self, event: dict) -> None:
        body = json.dumps(event, default=str).encode()
        why, retries = None, 0
        try:
            r = self._pool.request("POST", self.url, body=body, headers={
                "Content-Type": "application/json", "User-Agent": "iot-controller-webhook"})
            retries = len(r.retries.history) if r.retries is not None else 0
            if 200 <= r.status < 300:
                with self._lock:
                    self.counts["sent"] += 1
                    self.counts["retries"] += retries
                return
            why = f"HTTP {r.status}"
        except urllib3.exceptions.HTTPError as exc:      # connection refused, time-outs: retries exhausted
            why = f"{type(exc).__name__}: {exc}"
            retries = getattr(getattr(exc, "reason", None), "retries", 0) or 0
        with self._lock:
            self.counts["failed"] += 1
        LOG.warning(json.dumps({"event": "webhook_failed", "url": self.url, "kind": event.get("event"),
                                "id": event.get("id"), "error": why[:300]}))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ev = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._deliver(ev)
            except Exception:  # noqa: BLE001 - one bad event must not stop the sender
                LOG.exception("webhook: sending an event failed")

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._pool.clear()


__all__ = ["Webhook", "check_url"]
