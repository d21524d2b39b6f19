"""The app's configuration: oslo.config options (flags and ``--config-file``) -> :class:`AppConfig`.

Every option is a flag (``--policy-file PATH``) and a config-file key (``policy_file = PATH``
under ``[DEFAULT]``); flags win over the file. With nothing given, the app runs the shipped
default model with ``policies/default.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from classifier.capture.packets import mac_to_int

from controller_app.core import Settings
from controller_app.httpserver import HttpLimits
from controller_app.policy import default_policy_path


DEFAULT_ENGINE = "classifier.engine.engine:load_engine"


@dataclass
class AppConfig:
    engine: str = DEFAULT_ENGINE             #: module:function returning an Engine for a model path
    policy_file: str = field(default_factory=default_policy_path)
    model: str | None = None                 #: None: the classifier's shipped default model
    inventory_db: str = "inventory.sqlite"
    http_host: str = "127.0.0.1"
    http_port: int = 8080                    #: 0: any free port; -1: no HTTP endpoint
    policy_watch_interval: float = 2.0       #: seconds between checks of the policy file's mtime
    batch_size: int = 2048                   #: packet-ins decoded together
    flush_interval: float = 0.1              #: seconds: decode a partial batch at least this often
    tick_interval: float = 1.0               #: seconds between core timer events
    inventory_flush_interval: float = 5.0
    pool_mode: str = "offline"               #: IP pools: offline | rdap | auto (classifier.pools.resolver)
    pool_cache: str | None = None            #: pool cache SQLite file (None: the classifier's default)
    web_pins: bool = False                   #: pins from the operator page (writes the policy's overrides)
    web_token_file: str | None = None        #: operators' tokens, `name:token` a line (needed for pins)
    traffic_interval: float = 10.0           #: seconds between reads of the devices' flow counters (0: none)
    webhook_url: str | None = None           #: timeline events POSTed here as JSON (None: no webhook)
    review_after: float = 3600.0             #: seconds provisional before a device joins the review queue
    rdap_url: str | None = None              #: RDAP bootstrap URL (None: ipwhois's)
    rdap_timeout: float | None = None        #: seconds per RDAP request (None: the classifier's default)
    core: Settings = field(default_factory=Settings)
    http_limits: HttpLimits = field(default_factory=HttpLimits)

    def rdap_options(self) -> dict:
        """Keyword arguments for :class:`classifier.pools.resolver.PoolResolver` beside mode and cache."""
        if self.pool_mode == "offline":
            return {}
        return {k: v for k, v in (("bootstrap_url", self.rdap_url), ("timeout", self.rdap_timeout)) if v}


# (name, type, default, help) of the options; core settings follow from Settings' fields.
_APP_OPTS = [
    ("engine", str, DEFAULT_ENGINE, "classification engine factory, module:function, called with --model"),
    ("policy-file", str, None, "YAML policy (default: policies/default.yaml of the installation)"),
    ("model", str, None, "classification model path (default: the shipped default model)"),
    ("inventory-db", str, "inventory.sqlite", "SQLite inventory of devices and decisions"),
    ("http-host", str, "127.0.0.1", "address of the read-only HTTP JSON and /metrics endpoint"),
    ("http-port", int, 8080, "port of the HTTP endpoint (0: any free port, -1: none)"),
    ("policy-watch-interval", float, 2.0, "seconds between checks for a changed policy file (0: only SIGHUP)"),
    ("batch-size", int, 2048, "packet-ins decoded together (the receive thread waits when 4 batches are pending)"),
    ("flush-interval", float, 0.1, "seconds: decode a partial batch at least this often"),
    ("tick-interval", float, 1.0, "seconds between timer events (decisions, re-checks, LLDP)"),
    ("pool-mode", str, "offline", "IP pool look-ups: offline (default), rdap (live, cache first) or auto"),
    ("pool-cache", str, None, "IP pool cache, SQLite (default: $IOT_POOL_CACHE or ~/.cache/iotclass/pools.sqlite)"),
    ("web-pins", bool, False, "let operators pin a device's category or action from the web page (written to the "
                              "policy file's overrides; needs --web-token-file); off by default"),
    ("web-token-file", str, None, "operators' tokens for pins: one `name:token` a line, tokens of 16 characters or "
                                  "more (keep it chmod 600)"),
    ("traffic-interval", float, 10.0, "seconds between reads of the switches' per-device forwarding counters, for "
                                      "the page's traffic plots (0: none)"),
    ("webhook-url", str, None, "POST each timeline event (new device, category changed, confirmed, unknown, pinned, "
                               "released, switch up/down, policy reloaded) as JSON to this http(s) URL; retried "
                               "with back-off from a bounded queue, never blocking the controller"),
    ("review-after", float, 3600.0, "seconds a device may stay provisional before the operator page's review queue "
                                    "lists it (unknown devices and decisions on a device's claims alone are listed "
                                    "at once)"),
    ("rdap-url", str, None, "RDAP bootstrap URL for pool modes rdap and auto (default: ipwhois's)"),
    ("rdap-timeout", float, None, "seconds per RDAP request (default 5); look-ups never delay a decision"),
    ("http-max-connections", int, 256, "HTTP connections open at once; beyond, the oldest one still sending its "
                                       "request is closed"),
    ("http-max-connections-per-host", int, 128, "HTTP connections from one address; beyond, its oldest one still "
                                                "sending its request is closed"),
    ("http-workers", int, 4, "threads answering whole HTTP requests (a request costs one only once it is whole)"),
    ("http-header-timeout", float, 10.0, "seconds for an HTTP client to send its request line and headers"),
    ("http-body-timeout", float, 10.0, "seconds for an HTTP client to send its request body, after the headers"),
    ("http-idle-timeout", float, 5.0, "seconds of silence allowed while an HTTP request is being sent"),
    ("http-cpu-share", float, 0.25, "share of one core the HTTP answers may take on average (the rest stays with "
                                    "the switches); clients asking for more wait"),
]
#: HTTP options -> HttpLimits fields (each a positive number)
_HTTP_LIMITS = {"http_max_connections": "max_connections", "http_max_connections_per_host": "max_connections_per_host",
                "http_workers": "workers", "http_header_timeout": "header_timeout",
                "http_body_timeout": "body_timeout", "http_idle_timeout": "idle_timeout", "http_cpu_share": "cpu_share"}
_CORE_HELP = {
    "mirror_max_len": "bytes of each mirrored packet copied to the controller",
    "mirror_rate_pps": "mirror meter per learning device, packets/s",
    "mirror_burst": "mirror meter burst, packets",
    "identity_rate_pps": "identity meter per learning device, packets/s: what it sends of DHCP, DNS, mDNS and SSDP "
                         "is mirrored whole through it, apart from the mirror meter (0: mirrored like the rest)",
    "identity_burst": "identity meter burst, packets",
    "max_identity_values": "distinct identity values (DHCP names, mDNS services, ...) kept per device, in memory "
                           "and in the inventory (beyond it, only the first value of a kind the device has not sent "
                           "yet gets in)",
    "identity_probes": "mDNS/DNS-SD queries sent out of a learning device's port while it has not announced "
                       "mDNS services of its own, so that devices already running say what they are (0: none)",
    "identity_probe_interval": "seconds between a learning device's identity probes",
    "identity_probes_per_tick": "devices sent an identity probe at most per timer tick (the others wait a tick)",
    "learn_max_len": "bytes of each L2-learning copy",
    "l2_idle_timeout": "seconds an unused learned MAC entry lives",
    "decide_interval": "seconds between classification requests for one device",
    "decide_min_packets": "mirrored packets a device needs before its first classification",
    "recheck_interval": "seconds from a confirmed decision to its next re-check",
    "recheck_window": "seconds a re-check mirrors before giving up",
    "unknown_recheck_interval": "seconds from an unknown decision to its re-examination (mirrored again for "
                                "--recheck-window); a new identity value of the device re-opens it sooner",
    "lldp_interval": "seconds between topology probes",
    "link_timeout": "seconds without a probe before a link is considered gone",
    "max_buffer_packets": "mirrored packets kept per learning device (over it, the oldest eighth is dropped)",
    "time_scale": "replays and demos only: a capture replayed K times faster is classified in its own time "
                  "(the classifier sees t0 + (t - t0) * K); 1 on a real network",
    "max_hosts_per_port": "devices learned on one switch port; new MACs beyond it are forwarded, not learned",
    "max_hosts_per_switch": "devices learned on one switch; new MACs beyond it are forwarded, not learned",
    "max_mirrored": "devices mirrored at once (two meters and twelve entries each); others wait for a slot",
    "learn_ban_timeout": "seconds a port (or switch) at its cap stops copying unknown sources (0: no ban)",
    "learn_rate_pps": "per switch: copies of unknown sources to the controller, packets/s (0: no meter)",
    "learn_burst": "burst of the meter on copies of unknown sources, packets",
    "host_timeout": "seconds unseen before a device's switch resources are freed (undecided: forgotten, "
                    "decided: kept, rules back when seen)",
    "max_pending_decisions": "classification requests outstanding at once (the rest are asked later)",
    "decide_timeout": "seconds after which an unanswered classification request is asked again",
    "cap_log_interval": "seconds between log lines about caps reached and devices expired",
}
_NON_NEGATIVE = ("max_hosts_per_port", "max_hosts_per_switch", "max_mirrored", "learn_ban_timeout",
                 "learn_rate_pps", "learn_burst", "max_pending_decisions", "identity_rate_pps", "identity_burst",
                 "max_identity_values", "identity_probes", "identity_probes_per_tick")
_POSITIVE = ("host_timeout", "decide_timeout", "cap_log_interval", "identity_probe_interval",
             "unknown_recheck_interval")


def _core_fields():
    return [f for f in fields(Settings) if f.name != "gateways"]


def register_opts(cfg_module, conf, cli: bool = True) -> None:
    """Register the app's options on the framework's CONF (idempotent). ``cli=False`` when
    the command line was already parsed (config-file values still apply)."""
    opts = []
    for name, typ, default, help_ in _APP_OPTS:
        cls = {str: cfg_module.StrOpt, int: cfg_module.IntOpt, float: cfg_module.FloatOpt,
               bool: cfg_module.BoolOpt}[typ]
        opts.append(cls(name, default=default, help=help_))
    for f in _core_fields():
        typ = type(f.default)
        cls = {int: cfg_module.IntOpt, float: cfg_module.FloatOpt}[typ]
        opts.append(cls(f.name.replace("_", "-"), default=f.default, help=_CORE_HELP.get(f.name, f.name)))
    opts.append(cfg_module.ListOpt("gateway-macs", default=[],
                                   help="router MACs: forwarded, never classified (comma-separated)"))
    for opt in opts:
        if opt.dest in conf:
            continue
        if cli:
            conf.register_cli_opt(opt)
        else:
            conf.register_opt(opt)


def from_conf(conf) -> AppConfig:
    """An :class:`AppConfig` from a parsed CONF (options missing from it keep their defaults)."""
    def get(name, default=None):
        try:
            v = getattr(conf, name)
        except Exception:  # noqa: BLE001 - oslo raises NoSuchOptError (a framework-specific class)
            return default
        return default if v is None else v

    cfg = AppConfig()
    cfg.policy_file = get("policy_file") or default_policy_path()
    cfg.engine = get("engine", DEFAULT_ENGINE)
    cfg.model = get("model")
    cfg.inventory_db = get("inventory_db", cfg.inventory_db)
    cfg.http_host = get("http_host", cfg.http_host)
    cfg.http_port = int(get("http_port", cfg.http_port))
    cfg.policy_watch_interval = float(get("policy_watch_interval", cfg.policy_watch_interval))
    cfg.batch_size = max(1, int(get("batch_size", cfg.batch_size)))
    cfg.flush_interval = float(get("flush_interval", cfg.flush_interval))
    cfg.tick_interval = float(get("tick_interval", cfg.tick_interval))
    cfg.pool_mode = get("pool_mode", cfg.pool_mode)
    if cfg.pool_mode not in ("offline", "rdap", "auto"):
        raise ValueError(f"--pool-mode: {cfg.pool_mode!r} is not one of offline, rdap, auto")
    cfg.pool_cache = get("pool_cache")
    cfg.web_pins = bool(get("web_pins", False))
    cfg.web_token_file = get("web_token_file")
    if cfg.web_pins and not cfg.web_token_file:
        raise ValueError("--web-pins: needs --web-token-file (operators' tokens, one `name:token` a line)")
    cfg.traffic_interval = float(get("traffic_interval", cfg.traffic_interval))
    if cfg.traffic_interval < 0:
        raise ValueError(f"--traffic-interval: {cfg.traffic_interval!r} is negative")
    cfg.webhook_url = get("webhook_url")
    if cfg.webhook_url:
        from controller_app.webhook import check_url
        check_url(cfg.webhook_url)
    cfg.review_after = float(get("review_after", cfg.review_after))
    if not cfg.review_after >= 0:
        raise ValueError(f"--review-after: {cfg.review_after!r} is negative")
    limits = {}
    for opt, name in _HTTP_LIMITS.items():
        default = getattr(cfg.http_limits, name)
        v = type(default)(get(opt, default))
        if not v > 0:
            raise ValueError(f"--{opt.replace('_', '-')}: {v!r} is not a positive number")
        limits[name] = v
    cfg.http_limits = HttpLimits(**limits)
    cfg.rdap_url = get("rdap_url")
    cfg.rdap_timeout = get("rdap_timeout")
    if cfg.rdap_timeout is not None and not float(cfg.rdap_timeout) > 0:
        raise ValueError(f"--rdap-timeout: {cfg.rdap_timeout!r} is not a positive number")
    core = {f.name: type(f.default)(get(f.name, f.default)) for f in _core_fields()}
    gws = get("gateway_macs", []) or []
    try:
        core["gateways"] = tuple(mac_to_int(g) for g in gws)
    except ValueError as exc:
        raise ValueError(f"--gateway-macs: {exc}") from None
    if not core["time_scale"] > 0:
        raise ValueError(f"--time-scale: {core['time_scale']!r} is not a positive number")
    for name in _NON_NEGATIVE:
        if not core[name] >= 0:
            raise ValueError(f"--{name.replace('_', '-')}: {core[name]!r} is negative")
    for name in _POSITIVE:
        if not core[name] > 0:
            raise ValueError(f"--{name.replace('_', '-')}: {core[name]!r} is not a positive number")
    cfg.core = Settings(**core)
    return cfg
