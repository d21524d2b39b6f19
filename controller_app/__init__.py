"""The OpenFlow app: ``ryu-manager controller_app``.

The app class, :class:`IotController`, must be defined in this module: os-ken's and Ryu's
managers load only the app classes defined in the module they are named. Its code lives in
:mod:`controller_app.shell` (a thin shell around the pure core, :mod:`controller_app.core`),
which picks the framework by what is already imported — Ryu under Ryu's ``ryu-manager``,
os-ken otherwise (``IOT_CONTROLLER_FRAMEWORK=ryu|os_ken`` forces it).

Importing this package alone (``iotclass`` does, for ``policy check`` and ``devices``) does not
import a framework: the class is defined at once when a framework is already loaded (as under
either manager), and otherwise on first access.
"""

from __future__ import annotations

import os
import sys

_SHELL_NAMES = ("IotController", "FRAMEWORK")


def _framework_loaded() -> bool:
    return bool(os.environ.get("IOT_CONTROLLER_FRAMEWORK")) or any(
        m in sys.modules for m in ("os_ken.base.app_manager", "ryu.base.app_manager"))


def _define():
    from controller_app import shell

    class IotController(shell.IotControllerShell):
        __doc__ = shell.IotControllerShell.__doc__

    globals()["IotController"] = IotController
    globals()["FRAMEWORK"] = shell.FRAMEWORK
    return IotController


if _framework_loaded():
    _define()


def __getattr__(name: str):
    if name in _SHELL_NAMES:
        _define()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SHELL_NAMES))
