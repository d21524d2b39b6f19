"""``ryu-manager``: run OpenFlow apps on os-ken's ``AppManager``.

Ryu 4.34 (its last release) does not start on Python >= 3.10, and os-ken 4.x dropped its
``osken-manager`` launcher, so the project ships this one. It keeps the old command line::

    ryu-manager [--config-file FILE] [--ofp-tcp-listen-port PORT] [--ofp-listen-host ADDR]
                [--app-lists A,B] [APP ...] [app options, e.g. --policy-file P --http-port N]

With no app named it runs ``controller_app``. Options come from oslo.config, as in Ryu: every
flag is also a config-file key under ``[DEFAULT]`` (``ofp_tcp_listen_port = 6653``).

The OpenFlow side (listener and switch connections) is :mod:`controller_app.ofconn` in place of
os-ken's own (installed before the apps load; see that module for what it changes and why):
handshake and idle timeouts, connection limits, a connected switch's datapath id not taken over
by another connection while the switch answers, ``accept()`` errors survived, malformed messages
counted and their logging rate-limited. Its options: ``--ofp-handshake-timeout``,
``--ofp-echo-interval``, ``--ofp-idle-timeout``, ``--ofp-takeover-probe-timeout``,
``--ofp-max-connections[-per-host]``, ``--ofp-max-handshakes[-per-host]``, ``--ofp-max-malformed``.
TLS: os-ken's ``--ctl-privkey``, ``--ctl-cert``, ``--ca-certs``, ``--ofp-ssl-listen-port``
(docs/deployment.md).

Stopping: Ctrl-C (SIGINT) and SIGTERM close every app (the controller writes its inventory)
and exit 0; if closing takes longer than ``CLOSE_TIMEOUT`` seconds the process exits 1 saying
so. SIGHUP asks apps that can (``request_policy_reload``) to reload their policy. A failure the
process cannot survive (the OpenFlow port cannot be bound, an app's event loop ended) exits 1
with the reason. The process ends with ``os._exit``: os-ken may leave threads that no one can
stop.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import re
import signal
import sys
import threading

os.environ.setdefault("OSKEN_HUB_TYPE", "native")   # read once, when os_ken.lib.hub is imported

from os_ken.lib import hub  # noqa: E402

hub.patch(thread=False)

from os_ken import cfg, log  # noqa: E402

log.early_init_log(logging.INFO)

from os_ken import flags  # noqa: E402,F401  (registers the framework's options)
from os_ken.base.app_manager import AppManager, OSKenApp  # noqa: E402
from os_ken.controller import controller  # noqa: E402,F401  (registers --ofp-* options)

from classifier import __version__  # noqa: E402

from controller_app import config as app_config  # noqa: E402
from controller_app import guard, ofconn  # noqa: E402

LOG = logging.getLogger("ryu-manager")
CONF = cfg.CONF
DEFAULT_APP = "controller_app"
CLOSE_TIMEOUT = 30.0


def _register() -> None:
    opts = [
        cfg.ListOpt("app-lists", default=[], help="application module names to run (comma-separated)"),
        cfg.MultiStrOpt("app", positional=True, default=[], help="application module names to run"),
        cfg.StrOpt("pid-file", default=None, help="write the process id to this file"),
    ]
    for opt in opts:
        if opt.dest not in CONF:
            CONF.register_cli_opt(opt)
    app_config.register_opts(cfg, CONF, cli=True)
    ofconn.register_opts(CONF, cli=True)


def _harden_openflow(limits):
    """The project's OpenFlow connection handling in place of os-ken's (controller_app.ofconn),
    and for every app (the OpenFlow service included) an event loop that survives a failing
    handler: os-ken's, on its thread hub, ends at the first exception without a word."""
    OSKenApp._event_loop = _surviving_event_loop
    return ofconn.install(limits)


def _surviving_event_loop(self):
    guard.run_event_loop(self)


def _warn_if_exposed() -> None:
    host = CONF.ofp_listen_host
    tls = CONF.ctl_privkey is not None and CONF.ctl_cert is not None
    if host in ("0.0.0.0", "::", "") and not (tls and CONF.ca_certs):
        LOG.warning("OpenFlow listens on every address (--ofp-listen-host %s) %s: any host that reaches the "
                    "port can connect as a switch. Listen on the switches' network only, firewall the port, "
                    "or require switch certificates (--ctl-privkey, --ctl-cert, --ca-certs): "
                    "see docs/deployment.md", host or "''",
                    "with TLS but without --ca-certs" if tls else "without TLS")


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _load_app_by_module_name(mgr: AppManager):
    """os-ken's loader tries a name as a file path first, so ``ryu-manager controller_app`` run
    from the checkout (where ``controller_app/`` is a directory) fails with "Is a directory".
    Names that are importable module names are imported as modules; paths keep os-ken's way."""
    original = mgr.load_app

    def load_app(name: str):
        if _MODULE_NAME.fullmatch(name) and importlib.util.find_spec(name) is not None:
            mod = importlib.import_module(name)
            found = inspect.getmembers(mod, lambda c: inspect.isclass(c) and issubclass(c, OSKenApp)
                                       and c.__module__ == mod.__name__)
            return found[0][1] if found else None
        return original(name)

    mgr.load_app = load_app


def serve(argv: list[str] | None = None) -> int:
    """Parse options, run the apps until a signal, close them. Returns the exit status."""
    _register()
    try:
        from os_ken import version as osken_version
    except ImportError:  # pragma: no cover - os-ken always has it
        osken_version = "?"
    CONF(args=sys.argv[1:] if argv is None else argv, prog="ryu-manager", project="iot-sdn-classifier",
         version=f"ryu-manager (iot-sdn-classifier {__version__}, os-ken {osken_version})")
    if getattr(CONF, "log_file", None):          # it carries the pin lines (who, from where): 0600
        from controller_app.inventory import private_file
        private_file(CONF.log_file, "the log file", lambda msg: LOG.warning("ryu-manager: %s", msg))
    log.init_log()
    try:
        limits = ofconn.limits_from_conf(CONF)
    except ValueError as exc:
        LOG.error("ryu-manager: cannot start: %s", exc)
        return 1
    connections = _harden_openflow(limits)
    _warn_if_exposed()
    apps = list(CONF.app_lists) + list(CONF.app) or [DEFAULT_APP]
    if CONF.pid_file:
        with open(CONF.pid_file, "w") as fh:
            fh.write(str(os.getpid()))

    stop = threading.Event()
    mgr = AppManager.get_instance()
    _load_app_by_module_name(mgr)

    def on_stop(signum, frame):
        LOG.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    def on_hup(signum, frame):
        for app in list(mgr.applications.values()):
            reload_ = getattr(app, "request_policy_reload", None)
            if callable(reload_):
                threading.Thread(target=reload_, args=("SIGHUP",), daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    status = 0
    try:
        try:
            mgr.load_apps(apps)
            missing = [a for a in apps if a not in mgr.applications_cls]
            if missing:
                LOG.error("ryu-manager: no OpenFlow app class defined in %s (an app class must be defined in the "
                          "module named, not imported into it)", ", ".join(missing))
                return 1
            contexts = mgr.create_contexts()
            services = mgr.instantiate_apps(**contexts)
        except Exception as exc:  # noqa: BLE001 - one line for the operator, the traceback at debug level
            LOG.debug("start-up failed", exc_info=True)
            LOG.error("ryu-manager: cannot start: %s", exc)
            return 1
        while not stop.wait(0.5):
            reason = guard.fatal_reason()
            if reason:
                LOG.error("ryu-manager: cannot go on: %s", reason)
                status = 1
                break
            if services and not any(t.is_alive() for t in services):
                LOG.error("ryu-manager: the OpenFlow listener stopped (is the port in use?)")
                status = 1
                break
    finally:
        if connections is not None:
            for lst in list(connections.listeners):   # no new switches while closing
                lst.stop()
        status = _close(mgr) or status
        if connections is not None:
            connections.stop()
    return status


def _close(mgr: AppManager) -> int:
    """Close every app (in a thread, so that a stuck close cannot hang the process)."""
    failed = []

    def run():
        try:
            mgr.close()
        except Exception:  # noqa: BLE001 - closing: log and exit anyway
            LOG.exception("closing the apps")
            failed.append(1)

    t = threading.Thread(target=run, name="close-apps", daemon=True)
    t.start()
    t.join(CLOSE_TIMEOUT)
    if t.is_alive():
        LOG.error("ryu-manager: closing the apps did not finish within %g s; exiting anyway", CLOSE_TIMEOUT)
        return 1
    return 1 if failed else 0


def main() -> None:
    status = serve()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
