"""The layer contract: which part of edge may import which. A wrong arrow fails here the
day it is written.

Layers from the bottom up; a unit (a top-level module or package under edge/) may import
only units of lower layers (and itself). Units in the same layer are siblings that must
not import each other: retention and audit meet only through the audit-sink protocol.
"""

from __future__ import annotations

import ast
import re
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
        "edge.transcript",
        "edge.hardening",
        "edge.progress",
        "edge.burst",
        "edge.invocation",
        "edge.systemd",
    },
    {"edge.events"},  # every audit event type (the writers below audit build them)
    {"edge.instants", "edge.sink"},
    {"edge.disk"},  # private files, no links followed, the data folder's layout and lock
    {"edge.config"},
    {"edge.policy"},  # the strictest policy, the tag a session carries
    {"edge.crypto"},  # age, the kernel keyring, vaults
    {"edge.written"},  # what the household is told: the written policy's terms and words, inactivity notices
    {"edge.store"},  # keystore, records, buckets, recorder, export
    {"edge.testing"},  # the tests' and the benchmarks' household config template and bulk keystore
    {"edge.retention", "edge.audit"},  # siblings: shredding on time; the log that proves it
    {"edge.audio", "edge.stt", "edge.voice"},  # the pipeline's sources, its recognizer, its speaker encoder
    {"edge.tagging"},
    {"edge.spoken"},  # rights by voice: what a spoken command does (forget, guest mode)
    {"edge.session"},  # one session's life: tag, decoder, where its audio goes (held or sealed)
    {"edge.agent"},  # the pipeline
    {"edge.control", "edge.wyoming"},  # siblings: the control socket; the Wyoming speech-to-text listeners
    {"edge.wiring"},  # the composition root: builds all of the above
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


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Every edge module `path` imports, at the top or inside a function, relative imports
    too (resolved against `module`, the importing module's name)."""
    found = set()
    package = _package_of(path, module)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "edge"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else _relative(package, node.level, node.module)
            if base and base.split(".")[0] == "edge":
                found |= {f"{base}.{alias.name}" if base == "edge" else base for alias in node.names}
    return found


def _package_of(path: Path, module: str | None) -> list[str]:
    if module is None:
        return ["edge"]
    parts = module.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _relative(package: list[str], level: int, name: str | None) -> str:
    """`from ..x import y` inside `package`: the module it names."""
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def module_graph() -> dict[str, set[str]]:
    """Module -> the edge modules it imports (a package import counts as its __init__)."""
    modules = edge_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in imports_of(path, name):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # `from edge.x import name`: module edge.x
            if target in modules and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or not (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
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
        for target in imports_of(path, name):
            other = unit_of(target) if unit_of(target) in set().union(*LAYERS) else "edge"
            if other != unit and layer_of(other) >= layer_of(unit):
                wrong.append(f"{name} imports {target} ({'a sibling' if layer_of(other) == layer_of(unit) else 'a higher layer'})")
    assert wrong == [], "\n".join(wrong)


def test_the_check_can_fail(tmp_path):
    """Positive control: the walker sees an upward import, even one inside a function."""
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from edge.cli import main\n")
    assert imports_of(path) == {"edge.cli"} and layer_of("edge.cli") > layer_of("edge.store")


def test_relative_imports_are_seen():
    """A relative import is an import: `from ..cli import main` inside edge/store/ goes up."""
    folder = EDGE / "store"
    path = folder / "keystore.py"
    source = ast.parse("from ..cli import main\nfrom . import records\n")
    found = set()
    for node in ast.walk(source):
        if isinstance(node, ast.ImportFrom):
            found.add(_relative(_package_of(path, "edge.store.keystore"), node.level, node.module))
    assert found == {"edge.cli", "edge.store"}


def test_no_module_imports_itself_round_about():
    """Inside one unit too: modules that import each other (even only for type hints) are
    one module in two files, and the seams between them are not real."""
    assert cycles(module_graph()) == []


def test_the_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_readme_map_names_every_unit():
    """The Development section's map of the package: a unit it does not name is a part a
    newcomer cannot find."""
    readme = (EDGE.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Development", 1)[1].split("\n## ", 1)[0]
    missing = []
    for unit in sorted(set().union(*LAYERS) - {"edge", "edge.__main__"}):
        short = unit.removeprefix("edge.")
        package = (EDGE / short).is_dir()
        named = f"edge/{short}/" in section if package else re.search(rf"\b{re.escape(short)}\b", section) is not None
        if not named:
            missing.append(f"edge/{short}/" if package else short)
    assert missing == [], f"README.md's Development map does not name: {', '.join(missing)}"


BUILT_IN_WIRING = frozenset(
    {
        "KeyringVault",
        "FileVault",
        "MemoryVault",
        "TpmVault",
        "Keystore",
        "AuditLog",
        "TrustedClock",
        "Shredder",
        "RetentionService",
        "Recorder",
        "Agent",
        "VoiceTagger",
        "Household",
        "WyomingServer",
        "ControlServer",
    }
)
"""edge's core parts: outside tests, only the composition root (edge/wiring.py) constructs them."""


def constructions(path: Path, classes: frozenset[str]) -> list[str]:
    """Where `path` calls one of `classes` ("LINE: Name"), by name, as `module.Name` or under
    an alias of its import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {name: name for name in classes}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {alias.asname: alias.name for alias in node.names if alias.name in classes and alias.asname}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if called in names:
                found.append((node.lineno, names[called]))
    return [f"{line}: {name}" for line, name in sorted(found)]


def test_core_parts_are_built_only_in_wiring():
    """One composition root: a command or the service that builds a vault, a keystore, an
    audit log or a server itself builds it differently from everyone else; wiring has a
    `make_*` or `open_*` for each."""
    wrong = [
        f"{path.relative_to(EDGE.parent)}:{where}"
        for name, path in edge_modules().items()
        if name != "edge.wiring"
        for where in constructions(path, BUILT_IN_WIRING)
    ]
    assert wrong == [], "build these through edge/wiring.py:\n" + "\n".join(wrong)


def test_the_core_parts_are_classes_of_edge():
    """A part renamed must be renamed here too, or the check above would look for nothing."""
    defined = {
        node.name
        for path in edge_modules().values()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
    }
    assert BUILT_IN_WIRING - defined == set()
    assert constructions(EDGE / "wiring.py", BUILT_IN_WIRING), "wiring builds them"


def test_the_construction_check_can_fail(tmp_path):
    """Positive control: a direct call, a call through its module, and one under an alias."""
    path = tmp_path / "command.py"
    path.write_text(
        "from edge.audit.log import AuditLog as Log\nfrom edge.store import keystore\n"
        "def f(d):\n    Log(d)\n    keystore.Keystore(d, None)\n    return AuditLog(d)\n"
    )
    assert constructions(path, BUILT_IN_WIRING) == ["4: AuditLog", "5: Keystore", "6: AuditLog"]


def test_the_vault_module_does_not_choose_a_backend():
    """Which vault a folder uses is the config's choice, made in wiring: crypto/vault.py knows
    how its backends keep a root, never reads the config nor reaches for the TPM's module."""
    modules = edge_modules()
    assert {"edge.config", "edge.crypto.tpm"} & imports_of(modules["edge.crypto.vault"], "edge.crypto.vault") == set()
