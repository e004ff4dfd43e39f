"""The layer contract of docs/ARCHITECTURE.md, checked on the source: every import, at module level or inside a
function (lazy), goes to the same layer or a lower one; no import cycles; benchmarks import no tests.

The graph is read with `ast` from the files (nothing is imported), so a planted upward import anywhere fails here.
"""

from __future__ import annotations

import ast

import pytest
from import_graph import ROOT, import_graph

# Bottom to top. A module belongs to the first entry whose name is it or a package above it.
LAYERS = [
    ("core", ["srpo", "srpo.schema", "srpo.chain", "srpo.runfolder", "srpo.steps", "srpo.configs",
              "srpo.train_configs", "srpo.cli_util", "srpo.clients", "srpo.cache", "srpo.refusal", "srpo.gate",
              "srpo.pairing", "srpo.chaos", "srpo.progress", "srpo.testing", "srpo.dream_prompts"]),
    ("models", ["srpo.models", "srpo.model_families", "srpo.training", "srpo.sharding", "srpo.vllm_backend"]),
    ("judges and world", ["srpo.judges", "srpo.world"]),
    ("evals and data_builders", ["srpo.evals", "data_builders"]),
    ("stages", ["srpo.stages"]),
    ("driver", ["srpo.model_specs", "srpo.launch_checks", "srpo.recipe", "srpo.launch_validate", "srpo.driver",
                "srpo.tracking", "srpo.report", "srpo.status", "srpo.compare", "srpo.judge_eval", "srpo.chat"]),
    ("cli", ["srpo.cli"]),
]
# Side by side in one layer, but never importing each other in this direction.
FORBIDDEN = [("srpo.judges", "srpo.world"), ("srpo.world", "srpo.judges"), ("data_builders", "srpo.evals")]


def layer_of(name: str) -> tuple[int, str]:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (rank, prefix)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS here and to docs/ARCHITECTURE.md")
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        rank, _ = layer_of(mod)
        for dep in sorted(deps):
            dep_rank, _ = layer_of(dep)
            if dep_rank > rank:
                bad.append(f"{mod} ({LAYERS[rank][0]}) imports {dep} ({LAYERS[dep_rank][0]})")
            for low, high in FORBIDDEN:
                if (mod == low or mod.startswith(low + ".")) and (dep == high or dep.startswith(high + ".")):
                    bad.append(f"{mod} imports {dep}, which its layer forbids")
            if mod.startswith("srpo.stages.") and dep.startswith("srpo.stages."):
                bad.append(f"{mod} imports {dep}: steps never import each other")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_import_goes_down_the_layers():
    assert violations(import_graph()) == []


def test_no_import_cycles():
    graph = import_graph()
    # A package importing its own submodules (srpo.clients -> srpo.clients.x) is not a cycle of layers.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    assert cycles(graph) == []


def test_benchmarks_import_no_tests():
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "tests" or n.startswith("tests.") for n in names), path


@pytest.mark.parametrize("planted,expected", [
    ("def f():\n    from srpo.driver import Driver\n", "imports srpo.driver (driver)"),  # lazy, upward
    ("from srpo.world.scenes import OBJECTS\n", "imports srpo.world.scenes"),  # judges must not read the world
])
def test_the_check_catches_a_planted_import(tmp_path, planted, expected):
    import shutil

    for pkg in ("srpo", "data_builders"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "srpo" / "judges" / "rule.py"
    target.write_text(target.read_text() + "\n" + planted)
    found = violations(import_graph(tmp_path))
    assert any(expected in v and v.startswith("srpo.judges.rule") for v in found), found


def test_cycle_detection_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
