"""train/ is layered one way down: no module imports (even inside a function) a module that imports it
back. The graph is read from the source with `ast`, so lazy imports count too."""
from __future__ import annotations

import ast
from pathlib import Path

TRAIN = Path(__file__).resolve().parents[2] / "train"

#: the documented order, lowest first: a module may import only modules of a lower layer
LAYERS = [
    {"data", "augment", "models", "scenes"},
    {"from_tflite", "model_table", "runtime_views"},
    {"scoring"},
    {"swa", "report", "recipes", "resume"},
    {"fit", "park"},
    {"evaluate", "tune"},
    {"cli"},
]


def import_graph(root: Path = TRAIN, package: str = "fer_train") -> dict[str, set[str]]:
    """module -> the sibling modules it imports (relative `from .x import`, `from . import x`,
    absolute `fer_train.x`), at any depth of the file."""
    modules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for m in modules:
        tree = ast.parse((root / f"{m}.py").read_text(), filename=f"{m}.py")
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    targets.append(node.module.split(".")[0])
                elif node.level == 1:
                    targets.extend(a.name for a in node.names)
                elif node.level == 0 and node.module and node.module.startswith(package):
                    rest = node.module[len(package):].lstrip(".")
                    targets.extend([rest.split(".")[0]] if rest else [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(package + "."):
                        targets.append(a.name.split(".")[1])
            graph[m].update(t for t in targets if t in modules and t != m)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_reads_lazy_and_absolute_imports(tmp_path):
    (tmp_path / "low.py").write_text("import numpy\n")
    (tmp_path / "high.py").write_text("def f():\n    from .low import x\n    import fer_train.mid\n")
    (tmp_path / "mid.py").write_text("from fer_train import low\n")
    assert import_graph(tmp_path) == {"low": set(), "high": {"low", "mid"}, "mid": {"low"}}


def test_train_has_no_import_cycle():
    graph = import_graph()
    assert "fit" in graph and "evaluate" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in train/: " + " -> ".join(cycle)


def test_train_imports_only_downwards():
    graph = import_graph()
    layer = {m: i for i, group in enumerate(LAYERS) for m in group}
    unplaced = sorted(set(graph) - set(layer))
    assert not unplaced, f"train/ modules missing from LAYERS: {unplaced}"
    upward = [f"{m} -> {t}" for m, ts in graph.items() for t in ts if layer[t] >= layer[m]]
    assert not upward, "imports that do not go down a layer: " + ", ".join(sorted(upward))
