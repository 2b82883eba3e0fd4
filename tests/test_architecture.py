"""Boundaries of the package: an import graph without cycles, parity/ independent of the simulator, and the
contract between the trace (trace.pixel_trace) and the canonical factor schema (parity.schema)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import torch

from nanobragg_torch.cli import config_from_flags
from nanobragg_torch.engine import render
from nanobragg_torch.parity.schema import EXTRA, SCHEMA, ordered_names
from nanobragg_torch.plan import build_plan
from nanobragg_torch.trace import LOCATION_KEYS, pixel_trace

PACKAGE = Path(__file__).resolve().parents[1] / "nanobragg_torch"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file, function-level imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            # a module's own parent packages are initialised before it: not an edge
            deps |= {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
        graph[name] = deps
    return graph


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert "nanobragg_torch.engine" in graph and "nanobragg_torch.cli" in graph["nanobragg_torch.__main__"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def layer_table() -> list[tuple[str, list[str]]]:
    """docs/architecture.md's layer table, top layer first: (layer, module entries as written: `cli`, `io/*`)."""
    text = ARCHITECTURE.read_text()
    table = text[text.index("## Layers"):text.index("## Data flow")]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("Layer", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], re.findall(r"`([A-Za-z_][\w/]*(?:/\*)?)`", cells[1])))
    return rows


def module_layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Every package module -> the index of its layer in the table (0: the top); an explicit entry beats a
    `pkg/*` wildcard, and a word in backticks that is no module (`Plan`) is prose."""
    explicit: dict[str, int] = {}
    wildcard: dict[str, int] = {}
    for rank, (_, entries) in enumerate(layer_table()):
        for entry in entries:
            if entry.endswith("/*"):
                wildcard[f"nanobragg_torch.{entry[:-2].replace('/', '.')}"] = rank
                continue
            name = "nanobragg_torch" if entry == "__init__" else f"nanobragg_torch.{entry.replace('/', '.')}"
            if name in graph:
                assert name not in explicit, f"{entry} is in two layers"
                explicit[name] = rank
    layers = {}
    for name in graph:
        if name in explicit:
            layers[name] = explicit[name]
            continue
        packages = [p for p in wildcard if name == p or name.startswith(p + ".")]
        assert packages, f"{name} is in no layer of docs/architecture.md"
        layers[name] = wildcard[max(packages, key=len)]
    return layers


def climbs(graph: dict[str, set[str]]) -> list[str]:
    """Every import path (the first found) from a module to a module of a higher layer."""
    layers = module_layers(graph)
    names = [layer for layer, _ in layer_table()]
    problems = []
    for start in sorted(graph):
        paths = {start: [start]}
        todo = [start]
        while todo:
            node = todo.pop()
            for dep in sorted(graph[node]):
                if dep not in paths:
                    paths[dep] = paths[node] + [dep]
                    todo.append(dep)
        for dep, path in paths.items():
            if layers[dep] < layers[start]:
                chain = " -> ".join(p.replace("nanobragg_torch.", "") for p in path)
                problems.append(f"{chain}: {names[layers[start]]} reaches {names[layers[dep]]}")
    return problems


def test_the_layer_table_is_true():
    """Each module imports (transitively) only modules of its own layer or below, as the table says."""
    names = [layer for layer, _ in layer_table()]
    assert names[0] == "entry points" and names[-1] == "data" and len(names) >= 6
    problems = climbs(import_graph())
    assert not problems, "imports that climb a layer:\n" + "\n".join(problems)


def test_the_layer_check_catches_a_transitive_climb():
    """The check can fail, through a chain too: kernel -> vectors -> (an added import of) progress."""
    graph = import_graph()
    graph["nanobragg_torch.vectors"] = graph["nanobragg_torch.vectors"] | {"nanobragg_torch.progress"}
    problems = climbs(graph)
    assert "kernel -> vectors -> progress: pipeline reaches entry points" in problems


def test_parity_never_imports_the_simulator():
    graph = import_graph()
    allowed = ("nanobragg_torch.parity", "nanobragg_torch.io", "nanobragg_torch.errors")
    for name, deps in graph.items():
        if name.startswith("nanobragg_torch.parity"):
            bad = sorted(d for d in deps if not d.startswith(allowed) and d != "nanobragg_torch")
            assert not bad, f"{name} imports {bad}"


def test_trace_keys_are_the_schema_factors_in_pipeline_order():
    """Every trace entry is a schema factor (or a declared sampling location), every schema factor is traced
    (the extras are derived by the comparer), and the trace lists them in the schema's pipeline order."""
    flags = "-cell 70 80 90 75 85 95 -misset 10 20 30 -N 4 -default_F 100 -lambda 1 -distance 60 -detpixels 8"
    cfg, _ = config_from_flags(flags.split() + ["-pixel", "0.4"], cwd=os.devnull)
    with torch.no_grad():
        trace = pixel_trace(render(build_plan(cfg, torch.float64, compile=False), trace_pixel=(3, 4)))
    factors = [k for k in trace if k not in LOCATION_KEYS]
    assert set(LOCATION_KEYS) <= set(trace)
    assert set(factors) == {f.name for f in SCHEMA}  # SQUARE: F_latt_a/b/c included
    assert not {f.name for f in EXTRA} & set(trace)
    assert factors == ordered_names(factors)
