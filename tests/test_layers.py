"""The layer contract: which part of edge may import which. A wrong arrow fails here the
day it is written.

Layers from the bottom up; a unit (a top-level module or package under edge/) may import
only units of lower layers (and itself). Units in the same layer are siblings that must
not import each other: retention and audit meet only through the audit-sink protocol.
"""

from __future__ import annotations

import ast
from pathlib import Path

EDGE = Path(__file__).resolve().parent.parent / "edge"

LAYERS: list[set[str]] = [
    # the ground: values, errors and facts about the system, importing nothing of edge
    {
        "edge",
        "edge.errors",
        "edge.values",
        "edge.durations",
        "edge.faults",
        "edge.boot",
        "edge.pcm",
        "edge.sink",
        "edge.transcript",
        "edge.hardening",
        "edge.progress",
        "edge.burst",
        "edge.invocation",
    },
    {"edge.instants"},
    {"edge.disk"},  # private files, no links followed, the data folder's layout and lock
    {"edge.config"},
    {"edge.policy"},  # the strictest policy, the tag a session carries
    {"edge.crypto"},  # age, the kernel keyring, vaults
    {"edge.store"},  # keystore, records, buckets, recorder, export
    {"edge.retention", "edge.audit"},  # siblings: shredding on time; the log that proves it
    {"edge.audio", "edge.stt", "edge.voice"},  # the pipeline's sources, its recognizer, its speaker encoder
    {"edge.tagging"},
    {"edge.session"},  # one session's life: tag, decoder, where its audio goes (held or sealed)
    {"edge.agent"},  # the pipeline
    {"edge.wiring"},  # the composition root
    {"edge.control", "edge.wyoming"},  # siblings: the control socket; the Wyoming speech-to-text listeners
    {"edge.service", "edge.doctor"},
    {"edge.cli"},
    {"edge.__main__"},
]


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def edge_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(EDGE.rglob("*.py")):
        parts = ("edge", *path.relative_to(EDGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imports_of(path: Path) -> set[str]:
    """Every edge module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "edge"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "edge":
            found |= {f"{node.module}.{alias.name}" if node.module == "edge" else node.module for alias in node.names}
    return found


def layer_of(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise KeyError(unit)


def test_every_part_has_a_layer():
    units = {unit_of(name) for name in edge_modules()}
    placed = set().union(*LAYERS)
    assert units - placed == set(), "add these to LAYERS in tests/test_layers.py, where they belong"


def test_imports_only_go_down():
    wrong = []
    for name, path in edge_modules().items():
        unit = unit_of(name)
        for target in imports_of(path):
            other = unit_of(target) if unit_of(target) in set().union(*LAYERS) else "edge"
            if other != unit and layer_of(other) >= layer_of(unit):
                wrong.append(f"{name} imports {target} ({'a sibling' if layer_of(other) == layer_of(unit) else 'a higher layer'})")
    assert wrong == [], "\n".join(wrong)


def test_the_check_can_fail(tmp_path):
    """Positive control: the walker sees an upward import, even one inside a function."""
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from edge.cli import main\n")
    assert imports_of(path) == {"edge.cli"} and layer_of("edge.cli") > layer_of("edge.store")
