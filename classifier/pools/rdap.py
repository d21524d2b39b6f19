"""Live RDAP look-ups through ipwhois, with a timeout, retries with back-off and a deadline.

One look-up is ``ipwhois.IPWhois(ip).lookup_rdap(bootstrap=True, ...)``: ipwhois asks the RDAP
bootstrap service (``ipwhois.rdap.BOOTSTRAP_URL``, which redirects to the address's registry)
for the network object holding the address and parses it. ipwhois's own retries are turned
off (``retry_count=0``): this module retries transient failures (connection errors, time-outs,
HTTP 429 and 5xx) itself with exponential back-off, and gives up at a per-address deadline,
so that a look-up is bounded in time whatever the server does.

``bootstrap_url`` points the real client at another server (a mirror, or a loopback server in
tests): an ``urllib`` handler in the opener that ipwhois is given rewrites the bootstrap URL's
prefix, so ipwhois builds and parses every request itself.

RDAP registration data names the block's holder, its registry and country, not the AS that
routes it (ipwhois takes ASNs from Team Cymru's DNS/whois services, which are not RDAP); the
origin AS is read from ARIN's ``arin_originas0_originautnums`` extension where present, and
otherwise left to the offline database (see :mod:`classifier.pools.resolver`).

The calls block: run them in worker threads (:class:`classifier.pools.resolver.PoolResolver` does),
never on an event loop.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from classifier.pools.asndb import contains, parse_prefix, text_of

DEFAULT_BOOTSTRAP_URL = "https://rdap-bootstrap.arin.net/bootstrap"  # ipwhois.rdap.BOOTSTRAP_URL

_PORT43 = {
    "whois.arin.net": "arin",
    "whois.ripe.net": "ripencc",
    "whois.apnic.net": "apnic",
    "whois.lacnic.net": "lacnic",
    "whois.afrinic.net": "afrinic",
}
_RDAP_HOSTS = {
    "rdap.arin.net": "arin",
    "rdap.db.ripe.net": "ripencc",
    "rdap.apnic.net": "apnic",
    "rdap.lacnic.net": "lacnic",
    "rdap.afrinic.net": "afrinic",
}


@dataclass(frozen=True)
class RdapOptions:
    """How live look-ups behave. Worst case per address: about
    ``(retries + 1) * timeout + backoff * (2**retries - 1)``, and never more than ``deadline``."""

    bootstrap_url: str = DEFAULT_BOOTSTRAP_URL
    timeout: float = 5.0        # seconds per HTTP request (socket time-out)
    retries: int = 2            # further attempts after a transient failure
    backoff: float = 1.0        # first back-off in seconds, doubled each retry ...
    max_backoff: float = 30.0   # ... up to this
    deadline: float = 30.0      # no new attempt once this many seconds have passed for one address
    workers: int = 4            # concurrent look-ups


@dataclass(frozen=True)
class RdapAnswer:
    """What RDAP says of the network holding an address."""

    network: int | None   # 128-bit network of the registered block holding the address, if known
    plen: int
    holder: str           # registrant's name, else the network's name
    registry: str
    country: str
    asn: int | None       # origin AS where the registry states it (ARIN), else None
    handle: str


class RdapError(Exception):
    """A failed look-up: ``kind`` is 'unreachable', 'timeout', 'rate-limited', 'http', 'malformed',
    'client' (the client itself failed) or 'cancelled'."""

    def __init__(self, ip: str, kind: str, message: str, attempts: int = 1, via: str = ""):
        self.ip = ip
        self.kind = kind
        self.attempts = attempts
        where = f" via {via}" if via else ""
        super().__init__(f"RDAP {ip}{where}: {kind}: {message} (after {attempts} attempt{'s' * (attempts != 1)})")


class _RewriteBootstrap(urllib.request.BaseHandler):
    """Rewrites URLs under ipwhois's bootstrap URL to the configured one."""

    handler_order = 100  # before the HTTP handlers' own request processing

    def __init__(self, source: str, target: str):
        self.source = source.rstrip("/")
        self.target = target.rstrip("/")

    def _rewrite(self, req):
        url = req.full_url
        if url.startswith(self.source):
            req.full_url = self.target + url[len(self.source):]
        return req

    http_request = https_request = _rewrite


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_opener(bootstrap_url: str) -> urllib.request.OpenerDirector:
    """The urllib opener handed to ipwhois: environment proxies (none for loopback), and the
    bootstrap URL rewritten when it is not ipwhois's own."""
    from ipwhois import rdap as ipwhois_rdap
    proxies = {} if _is_loopback_url(bootstrap_url) else None
    handlers = [urllib.request.ProxyHandler(proxies)]
    if bootstrap_url.rstrip("/") != ipwhois_rdap.BOOTSTRAP_URL.rstrip("/"):
        handlers.append(_RewriteBootstrap(ipwhois_rdap.BOOTSTRAP_URL, bootstrap_url))
    return urllib.request.build_opener(*handlers)


def _registry(raw: dict) -> str:
    port43 = str(raw.get("port43") or "").strip().lower()
    if port43 in _PORT43:
        return _PORT43[port43]
    for link in raw.get("links") or []:
        if isinstance(link, dict):
            for key in ("value", "href"):
                host = (urlsplit(str(link.get(key) or "")).hostname or "").lower()
                if host in _RDAP_HOSTS:
                    return _RDAP_HOSTS[host]
    return ""


def _holder(result: dict) -> str:
    objects = result.get("objects") or {}
    for handle in result.get("entities") or []:
        obj = objects.get(handle) or {}
        if "registrant" in (obj.get("roles") or []):
            name = ((obj.get("contact") or {}).get("name") or "").strip()
            if name:
                return name
    return str((result.get("network") or {}).get("name") or "").strip()


def _block(value: int, cidrs: str) -> tuple[int | None, int]:
    """The most specific of the network's CIDRs that holds the address."""
    best = (None, 0)
    for text in (cidrs or "").split(","):
        text = text.strip()
        if not text:
            continue
        try:
            network, plen = parse_prefix(text)
        except Exception:
            continue
        if contains(network, plen, value) and plen >= best[1]:
            best = (network, plen)
    return best


def parse_result(value: int, result: dict) -> RdapAnswer:
    """An ipwhois ``lookup_rdap(..., inc_raw=True)`` result as an :class:`RdapAnswer`."""
    raw = result.get("raw") or {}
    net = result.get("network") or {}
    network, plen = _block(value, str(net.get("cidr") or ""))
    asn = None
    origin = raw.get("arin_originas0_originautnums") if isinstance(raw, dict) else None
    if isinstance(origin, list) and origin:
        try:
            asn = int(origin[0])
        except (TypeError, ValueError):
            asn = None
    return RdapAnswer(network, plen, _holder(result), _registry(raw) if isinstance(raw, dict) else "",
                      str(net.get("country") or ""), asn, str(net.get("handle") or ""))


class RdapClient:
    """Blocking RDAP look-ups with retries, back-off and a deadline (see the module docstring)."""

    def __init__(self, options: RdapOptions | None = None):
        self.options = options or RdapOptions()
        self._opener = build_opener(self.options.bootstrap_url)
        self._stop = threading.Event()
        self.requests = 0  # look-up attempts made (each is one or more HTTP requests)

    def cancel(self) -> None:
        """Make pending back-offs and later attempts give up at once."""
        self._stop.set()

    def _attempt(self, ip: str) -> dict:
        from ipwhois import IPWhois
        self.requests += 1
        obj = IPWhois(ip, timeout=self.options.timeout, proxy_opener=self._opener)
        # inc_nir must be False with bootstrap=True: ipwhois 1.3.0 then has no ASN data and its
        # NIR step would fail on it (TypeError).
        return obj.lookup_rdap(inc_raw=True, retry_count=0, depth=0, bootstrap=True, rate_limit_timeout=0,
                               inc_nir=False, root_ent_check=False)

    def lookup(self, value: int) -> RdapAnswer:
        from ipwhois.exceptions import (BaseIpwhoisException, HTTPLookupError, HTTPRateLimitError,
                                        InvalidEntityObject, InvalidNetworkObject)
        ip = text_of(value)
        opts = self.options
        start = time.monotonic()
        attempt = 0
        while True:
            if self._stop.is_set():
                raise RdapError(ip, "cancelled", "the resolver is closing", max(attempt, 1))
            attempt += 1
            t0 = time.monotonic()
            try:
                return parse_result(value, self._attempt(ip))
            except HTTPRateLimitError as exc:
                kind, retry, message = "rate-limited", True, str(exc)
            except HTTPLookupError as exc:
                message = str(exc)
                code = _http_code(message)
                if code is not None:
                    kind, retry = "http", code >= 500
                elif time.monotonic() - t0 >= opts.timeout * 0.95:
                    kind, retry = "timeout", True
                else:
                    # connection refused/reset, DNS failure, or a body that is not JSON:
                    # ipwhois reports all of these as one HTTPLookupError.
                    kind, retry = "unreachable", True
            except (InvalidNetworkObject, InvalidEntityObject) as exc:
                kind, retry, message = "malformed", False, str(exc)
            except (BaseIpwhoisException, ValueError, KeyError, TypeError, AttributeError) as exc:
                kind, retry, message = "malformed", False, f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # e.g. dnspython finding no resolver configuration in IPWhois()
                kind, retry, message = "client", False, f"{type(exc).__name__}: {exc}"
            if not retry or attempt > opts.retries:
                raise RdapError(ip, kind, message, attempt, opts.bootstrap_url)
            delay = min(opts.max_backoff, opts.backoff * (2 ** (attempt - 1)))
            if time.monotonic() - start + delay >= opts.deadline:
                raise RdapError(ip, kind, f"{message}; deadline of {opts.deadline:g} s reached", attempt,
                                opts.bootstrap_url)
            if self._stop.wait(delay):
                raise RdapError(ip, "cancelled", "the resolver is closing", attempt)


def _http_code(message: str) -> int | None:
    marker = "error code "
    at = message.find(marker)
    if at < 0:
        return None
    digits = message[at + len(marker):].split(".")[0].strip()
    return int(digits) if digits.isdigit() else None


__all__ = ["RdapOptions", "RdapAnswer", "RdapError", "RdapClient", "build_opener", "parse_result",
           "DEFAULT_BOOTSTRAP_URL"]
