"""No import cycle among bertforge.data's modules, counting imports inside functions too (the source -> synthetic
edge is a lazy one; synthetic must not import source back)."""
import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "engine" / "data"


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in DATA.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name in modules:
        edges = set()
        for node in ast.walk(ast.parse((DATA / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "bertforge.data":
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bertforge.data."):
                edges.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                edges |= {a.name.split(".")[2] for a in node.names if a.name.startswith("bertforge.data.")}
        graph[name] = edges & modules
    return graph


def _cycle(graph):
    state = {}

    def visit(n, path):
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return path + [n, m]
            if m not in state and (found := visit(m, path + [n])):
                return found
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n, [])):
            return found
    return None


def test_data_modules_import_no_cycle():
    graph = _graph()
    assert "synthetic" in graph["source"] and "source" not in graph["synthetic"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
