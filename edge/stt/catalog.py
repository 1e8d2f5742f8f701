"""Vosk models `edge-agent model fetch NAME` knows, each pinned to its archive's SHA-256.

The digests are those of the archives published at https://alphacephei.com/vosk/models,
each matched against at least two independent public records of the same archive
(size and digest). A model whose archive changes upstream fails the check and is
not installed: update the pin here only after checking the new archive.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_SITE = "https://alphacephei.com/vosk/models"


@dataclass(frozen=True)
class KnownModel:
    name: str
    """Folder name inside the archive, and the archive's name without `.zip`."""
    language: str
    size: int
    """Archive size in bytes."""
    sha256: str
    """Hex SHA-256 of the archive."""

    @property
    def url(self) -> str:
        return f"{MODEL_SITE}/{self.name}.zip"


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        "vosk-model-small-en-us-0.15", "English (US)", 41_205_931, "30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498"
    ),
    KnownModel("vosk-model-small-cn-0.22", "Chinese", 43_898_754, "3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba"),
    KnownModel("vosk-model-small-de-0.15", "German", 46_499_967, "b7e53c90b1f0a38456f4cd62b366ecd58803cd97cd42b06438e2c131713d5e43"),
    KnownModel("vosk-model-small-es-0.42", "Spanish", 39_817_833, "09b239888f633ef2f0b4e09736e3d9936acfd810bc65d53fad45261762c6511f"),
    KnownModel("vosk-model-small-fr-0.22", "French", 42_233_323, "cabf6180e177eb9b3a9a9d43a437bd5e549f3a7d09525e5d69a3fed787be12ad"),
    KnownModel("vosk-model-small-it-0.22", "Italian", 49_665_141, "9ec65e75861d1c6c2e457cccd932705340dcdf233f5b239f00733b4de0bf3267"),
    KnownModel("vosk-model-small-ja-0.22", "Japanese", 49_704_573, "efa092d280153a77615e9e0c7d7283e93e600de3d19d3bec686c57ef19d52eac"),
    KnownModel("vosk-model-small-ko-0.22", "Korean", 86_914_329, "eea36124087fed26c59996a4761519458e3bd185e8ea9d9865ad8760c4a1d989"),
    KnownModel("vosk-model-small-ru-0.22", "Russian", 46_236_750, "961d5ff98a17f4aa6de69864d0aa71fa5bac682301d2b5d17a3f24c5c99a46d4"),
)


def known_model(name: str) -> KnownModel | None:
    return next((m for m in KNOWN_MODELS if m.name == name), None)
