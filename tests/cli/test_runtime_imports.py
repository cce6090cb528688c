"""The operator CLI runs on runtime modules only: ``llm_limits.testing`` is test equipment.

Every command module is imported in a fresh interpreter (a module imports its dependencies
on import), and none of them may pull in ``llm_limits.testing``.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import llm_limits.cli


def test_no_cli_module_imports_the_test_equipment() -> None:
    modules = [
        f"llm_limits.cli.{m.name}"
        for m in pkgutil.iter_modules(llm_limits.cli.__path__)
        if m.name != "__main__"  # running it is running the CLI
    ]
    assert "llm_limits.cli.simulate" in modules and "llm_limits.cli.local" in modules
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('llm_limits.testing')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out
