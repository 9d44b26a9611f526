"""requirements.txt declares what runs: every module of the package imports when only the
declared distributions (and what they require, recursively) can be imported, and `pip check`
finds no broken requirement. In a fresh virtual environment (install.sh) that is simply the
case; on a machine whose Python holds more, the import test hides the rest."""
import importlib.metadata as md
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# Imports guarded by try/except ImportError: optional accelerators (setup.py extras) and
# interop helpers the tests use where present.
OPTIONAL = {"k2", "kaldifeat", "omegaconf"}

# Run in an interpreter without site-packages (-S) whose path holds the package and links to the
# declared distributions only, as a fresh virtual environment would: import every icefall module
# and every other module the code imports (many only inside functions), report the failures.
IMPORT_ALL = r"""
import importlib, json, pkgutil, sys
import icefall
names = [info.name for info in pkgutil.walk_packages(icefall.__path__, "icefall.")]
failed = {}
for name in names + sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def imported_modules() -> set:
    """Dotted names of the third-party modules that icefall/, egs/ and test/ import anywhere
    (top level or inside functions), less the standard library, icefall, recipe- and test-local
    modules and OPTIONAL."""
    files = [f for d in ("icefall", "egs", "test") for f in (ROOT / d).rglob("*.py")]
    local = {f.stem for f in files}
    names = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module)
    skip = set(sys.stdlib_module_names) | local | OPTIONAL | {"icefall"}
    return {n for n in names if n.split(".")[0] not in skip}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(requirements_txt: Path) -> set:
    """Canonical names of the distributions in requirements.txt and, recursively, of what their
    installed metadata requires (markers evaluated, extras not taken)."""
    todo = [Requirement(line.strip()) for line in requirements_txt.read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    seen = set()
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in md.requires(req.name) or []]
        except md.PackageNotFoundError:
            pass  # pip check below reports a missing declared distribution
    return seen


def link_distributions(names: set, site: Path) -> None:
    """Link the top-level files and folders of the installed distributions ``names`` (modules,
    packages, their .dist-info and bundled .libs) into the folder ``site``."""
    for dist in md.distributions():
        if canonical(dist.metadata["Name"]) not in names:
            continue
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            target = Path(dist.locate_file(top))
            if target.exists() and not (site / top).exists():
                (site / top).symlink_to(target)


def test_every_module_imports_with_declared_distributions_only(tmp_path):
    link_distributions(requirement_closure(ROOT / "requirements.txt"), tmp_path)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    modules = sorted(imported_modules())
    assert "lhotse" in modules and "torch.utils.tensorboard" in modules  # the scan sees them
    out = subprocess.run([sys.executable, "-S", "-c", IMPORT_ALL, *modules], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert failed == {}, failed


def test_requirement_closure_follows_dependencies():
    # lhotse requires PyYAML, which requirements.txt does not name: the closure must hold it.
    closure = requirement_closure(ROOT / "requirements.txt")
    assert {"lhotse", "torch", "pyyaml", "urllib3"} <= closure


def test_pip_check():
    pytest.importorskip("pip", reason="this environment has no pip to check it with")
    out = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
