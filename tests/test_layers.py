"""The package's import structure: no import cycle, and no module importing a higher layer.

The graph is read from the source with ``ast`` (every ``import`` and ``from ... import``, at module level
or inside functions, except those under ``if TYPE_CHECKING:``), so lazy imports count too: a cycle through
a function-level import is still a cycle (docs/architecture.md lists the layers).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "anpvs"

#: top to bottom; a module may import its own layer and the layers below it. Longest prefix wins.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("public API (the package root, lazy re-exports)", ("anpvs",)),
    ("cli", ("anpvs.cli", "anpvs.__main__")),
    ("jobs", ("anpvs.jobs",)),
    ("training and evaluation", ("anpvs.training", "anpvs.evaluation")),
    ("methods and attacks", ("anpvs.methods", "anpvs.attacks")),
    ("pruning schemes (the sparsifiers the loop drives; methods may bring one)", ("anpvs.sparsifiers",)),
    ("models (with their masks, compaction and checkpoints), metrics and data", ("anpvs.models", "anpvs.metrics",
                                                                                  "anpvs.data")),
    ("layers", ("anpvs.nn",)),
    ("foundations", ("anpvs._version", "anpvs.core", "anpvs.io")),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The anpvs modules ``module`` imports (a ``from pkg import name`` of a submodule is that submodule)."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == PACKAGE)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    target = ".".join(base[:len(base) - child.level + 1] + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] != PACKAGE:
                    continue
                for a in child.names:
                    sub = f"{target}.{a.name}"
                    found.add(sub if sub in known else target)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {m for m in found if m != module}


def import_graph(*, unresolved: list[str] | None = None) -> dict[str, set[str]]:
    """``{module: the anpvs modules it imports}``; imports of modules that do not exist go to ``unresolved``."""
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items()}
    if unresolved is not None:
        unresolved += [f"{m} imports {t}" for m, targets in graph.items() for t in sorted(targets) if t not in known]
    return {m: {t for t in targets if t in known} for m, targets in graph.items()}


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or (p != PACKAGE and module.startswith(p + "."))) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{module} is in no layer of tests/test_layers.py; add it to LAYERS"
    return rank


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "anpvs.training.loop" in graph and "anpvs.training.step" in graph["anpvs.training.loop"]
    assert "anpvs.cli" in graph


def test_every_import_names_a_module_of_the_package() -> None:
    # a relative import left behind by a move (from .checkpoint inside jobs/) fails only when it runs
    missing: list[str] = []
    import_graph(unresolved=missing)
    assert missing == []


def test_no_import_cycles() -> None:
    assert find_cycles(import_graph()) == []


def test_every_module_has_a_layer() -> None:
    for module in import_graph():
        layer_of(module)


def test_no_import_from_a_higher_layer() -> None:
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
              for m, targets in import_graph().items() for t in sorted(targets) if layer_of(t) < layer_of(m)]
    assert upward == []


def test_no_module_imports_the_package_root() -> None:
    # the root re-exports the public API lazily; a module importing it would import everything above itself
    graph = import_graph()
    assert [m for m, targets in graph.items() if PACKAGE in targets] == []


def test_cli_imports_no_torch_before_a_command() -> None:
    # anpvs --version / --help: the CLI imports only the version and the error types
    code = ("import sys, anpvs.cli\n"
            "heavy = [m for m in ('torch', 'numpy', 'yaml', 'anpvs.core.config') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


_SESSION = """
import json, sys, tempfile
from anpvs.core.registry import Registry
Registry.trace = set()
from anpvs.training.run_config import build_config, config_from_dict
from anpvs.methods.base import build_method, list_methods
from anpvs.models import create_model
from anpvs.data import dataset_names
from anpvs.training.loop import fit
from anpvs.jobs.evaluate import evaluate_checkpoint
from anpvs.jobs.check import check_checkpoint
dataset_names()
for name in list_methods():
    build_method(config_from_dict(build_config({"method.name": name}).to_dict()), 10)
create_model("lenet5_caffe_bbd")
with tempfile.TemporaryDirectory() as d:
    cfg = build_config({"method.name": "at", "data.train_limit": 32, "data.test_limit": 8, "train.epochs": 1,
                        "train.batch_size": 32, "attack.steps": 1, "eval.steps": 1, "eval.latency": False,
                        "device": "cpu", "out": d + "/run"})
    ckpt = fit(cfg, progress=False)["checkpoint"]
    evaluate_checkpoint(ckpt, device="cpu")
    check_checkpoint(ckpt, device="cpu", test_limit=8, probe_size=8)
print(json.dumps(sorted(Registry.trace)))
"""


def test_no_run_time_lookup_reaches_into_a_higher_layer() -> None:
    # A registry imports its plug-in package at the first lookup: an import made at run time, which the ast graph
    # above cannot see. A session (configs of every method, a model, a tiny run, eval, check) records who looks
    # which plug-in package up; the caller must be at the plug-in's layer or above, with no exception (resolving a
    # config, which needs the presets and settings of datasets and methods, is anpvs.training.run_config's).
    import json
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", _SESSION], capture_output=True, text=True, check=True, env=env)
    reaches = [tuple(pair) for pair in json.loads(out.stdout.strip().splitlines()[-1])]
    assert {package for _, package in reaches} >= {"anpvs.methods", "anpvs.models", "anpvs.data.formats"}
    upward = [f"{caller} ({LAYERS[layer_of(caller)][0]}) looks up {package} ({LAYERS[layer_of(package)][0]})"
              for caller, package in reaches
              if caller.startswith(PACKAGE) and layer_of(package) < layer_of(caller)]
    assert upward == []
