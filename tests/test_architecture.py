"""The import ladder's configuration stays complete (lint-imports itself runs in the test command)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Wiring that sits beside the ladder: settings and entry points import no project layer.
NOT_LAYERED = {"__init__", "web", "settings", "bootstrap", "wsgi"}


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (ladder,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return ladder["layers"]


def test_every_portal_module_is_in_the_bottom_layer():
    """A new module in portal/ must be placed on the ladder, or lint-imports would not check it."""
    bottom = {m.strip() for m in _layers()[3].split(":")}
    present = {
        f"portal.{p.stem if p.suffix == '.py' else p.name}"
        for p in (ROOT / "portal").iterdir()
        if (p.suffix == ".py" or ((p.is_dir() and (p / "__init__.py").exists()) or p.name == "migrations"))
        and (p.stem if p.suffix == ".py" else p.name) not in NOT_LAYERED
    }
    assert present - bottom == set(), f"add these to the bottom layer in pyproject.toml: {sorted(present - bottom)}"
    assert bottom - present == set(), f"these layer entries no longer exist: {sorted(bottom - present)}"


def test_ladder_order():
    assert _layers()[0] == "portal.web"
    assert _layers()[1:3] == ["lesions", "patients"]
    assert _layers()[-1] == "inference"
