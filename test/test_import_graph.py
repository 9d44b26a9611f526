"""Dependencies between library packages point down (docs/DESIGN: recipes -> probe/slm/vc/prune ->
asr/ssl/eval -> models -> nn/data -> core), with no cycles; every import counts, those inside
functions too. icefall.models reaches objectives and task heads only through its registries
(names resolved when used), so it sits below them."""
import ast
from pathlib import Path
from typing import Dict, Set

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "icefall"

# package -> layer (higher layers may import lower ones). The shared training loop
# (icefall/trainer.py) reads the data options and advances Zipformer schedules: it sits beside
# models, above nn/data.
LAYERS = {"core": 0, "nn": 1, "data": 1, "models": 2, "trainer": 2, "asr": 3, "ssl": 3, "eval": 3,
          "probe": 4, "slm": 4, "vc": 4, "prune": 4}


def _package(module: str) -> str:
    """icefall.asr.decode -> asr; icefall.models -> models; icefall.trainer -> core."""
    parts = module.split(".")
    if len(parts) < 2:
        return "core"
    sub = parts[1]
    if (LIB / sub).is_dir() or sub in ("models", "trainer"):
        return sub
    return "core"


def _imports(path: Path) -> Set[str]:
    """icefall modules imported anywhere in ``path`` (module level or inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("icefall")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("icefall"):
            # "from icefall import models" imports icefall.models
            out |= ({f"icefall.{a.name}" for a in node.names} if node.module == "icefall" else {node.module})
    return out


def package_graph() -> Dict[str, Dict[str, Set[str]]]:
    """{package: {imported package: {importing files}}} over the library."""
    graph: Dict[str, Dict[str, Set[str]]] = {}
    for path in LIB.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        src = _package(module)
        for imp in _imports(path):
            dst = _package(imp)
            if dst != src:
                graph.setdefault(src, {}).setdefault(dst, set()).add(str(path.relative_to(ROOT)))
    return graph


def test_every_package_has_a_layer():
    packages = {p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_dependencies_point_down():
    bad = []
    for src, deps in package_graph().items():
        for dst, files in deps.items():
            if LAYERS[dst] > LAYERS[src]:
                bad.append(f"{src} -> {dst} ({sorted(files)})")
    assert not bad, "\n".join(bad)


def test_asr_and_ssl_do_not_import_each_other():
    graph = package_graph()
    assert "ssl" not in graph.get("asr", {}), graph["asr"]["ssl"]
    assert "asr" not in graph.get("ssl", {}), graph["ssl"]["asr"]


def test_no_cycles_between_packages():
    graph = {src: set(deps) for src, deps in package_graph().items()}

    def reach(start: str) -> Set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [p for p in graph if p in reach(p)]
    assert not cycles, {p: graph[p] for p in cycles}


def test_registries_name_modules_above_models():
    """The objective/task/foreign-format registries are the only way models reaches up: each
    entry names an existing attribute of an asr/ssl module."""
    import importlib

    from icefall import models

    for table in (models.OBJECTIVES, models._TASK_BUILDERS, models._TASK_CONFIGS, models._FOREIGN_READERS):
        for target in table.values():
            module, _, attr = target.partition(":")
            assert _package(module) in ("asr", "ssl"), target
            assert hasattr(importlib.import_module(module), attr), target
