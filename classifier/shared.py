"""Where the shared captures and fixtures are: ``$IOT_SHARED`` or ``../shared`` beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_root() -> Path | None:
    env = os.environ.get("IOT_SHARED")
    root = Path(env) if env else REPO_ROOT.parent / "shared"
    return root if root.is_dir() else None


def datasets_root() -> Path | None:
    root = shared_root()
    return root / "datasets" if root and (root / "datasets").is_dir() else None
