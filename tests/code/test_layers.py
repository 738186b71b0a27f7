"""Layers point down: the plain logic (components/) imports no framework shell, the shells do not import
the command line or the demo. Read from the source with ast, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers import REPO

# package folder -> module prefixes its files must never import
FORBIDDEN = {
    "components": ("smart_energy.serving", "smart_energy.pipelines", "smart_energy.cli", "smart_energy.demo",
                   "smart_energy.loop", "kfp", "kserve", "fastapi", "kubernetes"),
    "feature_repo": ("smart_energy.serving", "smart_energy.pipelines", "smart_energy.cli", "kfp", "kserve"),
    "pipelines": ("smart_energy.serving", "smart_energy.cli", "smart_energy.demo", "smart_energy.loop", "kserve"),
    "serving": ("smart_energy.pipelines", "smart_energy.cli", "smart_energy.demo", "smart_energy.loop", "kfp"),
}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_layers_only_point_down(folder):
    files = sorted((REPO / folder).rglob("*.py"))
    assert files
    offences = [f"{path.relative_to(REPO)} imports {module}" for path in files for module in imported_modules(path)
                if any(module == p or module.startswith(p + ".") for p in FORBIDDEN[folder])]
    assert offences == []


def test_the_check_sees_lazy_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from smart_energy.serving.rollout import decide\n    import kfp.dsl\n")
    assert {"smart_energy.serving.rollout", "kfp.dsl"} <= imported_modules(probe)
