"""``ryu-manager``: run OpenFlow apps on os-ken's ``AppManager``.

Ryu 4.34 (its last release) does not start on Python >= 3.10, and os-ken 4.x dropped its
``osken-manager`` launcher, so the project ships this one. It keeps the old command line::

    ryu-manager [--config-file FILE] [--ofp-tcp-listen-port PORT] [--ofp-listen-host ADDR]
                [--app-lists A,B] [APP ...] [app options, e.g. --policy-file P --http-port N]

With no app named it runs ``controller_app``. Options come from oslo.config, as in Ryu: every
flag is also a config-file key under ``[DEFAULT]`` (``ofp_tcp_listen_port = 6653``).

Stopping: Ctrl-C (SIGINT) and SIGTERM close every app (the controller writes its inventory)
and exit 0. SIGHUP asks apps that can (``request_policy_reload``) to reload their policy.
os-ken's native hub runs switch connections on non-daemon threads blocked in ``recv`` that
``hub.kill`` cannot stop, so after the apps are closed the process ends with ``os._exit``.
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

LOG = logging.getLogger("ryu-manager")
CONF = cfg.CONF
DEFAULT_APP = "controller_app"


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
    log.init_log()
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
            if services and not any(t.is_alive() for t in services):
                LOG.error("ryu-manager: the OpenFlow listener stopped (is the port in use?)")
                status = 1
                break
    finally:
        try:
            mgr.close()
        except Exception:  # noqa: BLE001 - closing: log and exit anyway
            LOG.exception("closing the apps")
            status = status or 1
    return status


def main() -> None:
    status = serve()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
