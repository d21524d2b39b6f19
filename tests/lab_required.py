"""What every end-to-end module starts with: the checkout on the import path (the lab harness
runs from it) and a module-level skip, with the reason, where the lab cannot run (not root, no
Open vSwitch, Mininet, tcpreplay or tshark)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from topologies.harness import why_not_runnable  # noqa: E402


def require_lab() -> None:
    """Skip the calling module, saying why, when the lab cannot run here."""
    reason = why_not_runnable()
    if reason:
        pytest.skip(reason, allow_module_level=True)
