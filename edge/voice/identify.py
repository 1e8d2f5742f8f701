"""Who is speaking, decided fail-closed from the enrolled voiceprints.

A profile is chosen only when its voiceprint is the best match, reaches the threshold
(a higher one for an adult profile: a child tagged as an adult is the one error that
matters) and beats every other profile's voiceprint by the margin. Anything less is no
decision, and the session is tagged as if no voice were enrolled.

A session's voice is judged on its first partials first: when they are a clear match
(early_match: stricter than the full rule in every part) the rest are never embedded, which
saves most of the CPU for a household's own voices; anything less clear is judged on all of
them, exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from edge.config import Config
from edge.errors import KeystoreError
from edge.store.records import Voiceprint
from edge.voice.encoder import HIDDEN, Embedding, mean_print
from edge.voice.weights import PACKAGE, SHA256

ENCODER_ID = f"{PACKAGE}:{SHA256[:16]}"
"""What a voiceprint records as its maker: prints of another encoder never compare."""


@dataclass(frozen=True)
class Match:
    """The decision for one utterance; scores are never stored or logged."""

    profile: str | None
    """The profile chosen by voice; None = no decision (the existing order applies)."""
    best: str | None
    """The best-matching profile, chosen or not."""
    score: float
    """Its cosine similarity (-1 to 1); -1 when nothing was compared."""
    runner_up: float
    """The best score of any other profile; -1 when there is none."""
    ranked: tuple[tuple[str, float], ...] = ()
    """Every compared profile with its score, best first (what `voices check` shows)."""


def vector_of(voice: Voiceprint) -> Embedding:
    """A voiceprint's embedding (a fresh copy, so the caller may overwrite it)."""
    if len(voice.vector) != HIDDEN * 4:
        raise KeystoreError(f"the voiceprint of {voice.profile!r} is {len(voice.vector)} bytes, not {HIDDEN * 4} (keystore damaged)")
    return np.frombuffer(voice.vector, dtype="<f4").astype(np.float32)


def vector_bytes(embedding: Embedding) -> bytes:
    return np.asarray(embedding, dtype="<f4").tobytes()


def comparable(voices: Mapping[str, Voiceprint], config: Config) -> dict[str, Voiceprint]:
    """The voiceprints that can tag a session: of a profile the config has, made by this encoder."""
    names = {p.name for p in config.profiles}
    return {name: voice for name, voice in voices.items() if name in names and voice.encoder == ENCODER_ID}


def identify(embedding: Embedding, voices: Mapping[str, Voiceprint], config: Config) -> Match:
    """Compare one utterance's embedding with every comparable voiceprint."""
    scores = {name: float(np.dot(embedding, vector_of(voice))) for name, voice in comparable(voices, config).items()}
    if not scores:
        return Match(None, None, -1.0, -1.0)
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    best, score = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
    speaker = config.speaker
    needed = speaker.threshold if config.profile(best).is_child else speaker.adult_threshold
    chosen = best if score >= needed and score - runner_up >= speaker.margin else None
    return Match(chosen, best, score, runner_up, tuple(ranked))


EARLY_PARTIALS = 2
"""Partials a session's voice is judged on first (its first ~2.6 s of speech): a clear match
there ends the embedding, the rest of its partials are never computed."""
EARLY_MARGIN = 0.05
"""How much more than the full rule an early decision needs: on the threshold and on the margin."""


def early_match(prints: NDArray[np.float32], voices: Mapping[str, Voiceprint], config: Config) -> Match | None:
    """The decision on the first EARLY_PARTIALS partials' prints (partials, 256) when it is
    clear, else None (then the session is judged on all its partials, as without this). Clear
    means stricter than the full rule in every part: their mean chooses the profile with the
    threshold and the margin each raised by EARLY_MARGIN, and every partial alone chooses the
    same profile with the ordinary values. A voice that is not clearly one profile (a
    stranger's, an altered one) is never decided here, only on all its partials."""
    if len(prints) < EARLY_PARTIALS:
        return None
    speaker = config.speaker
    stricter = replace(
        config,
        speaker=replace(
            speaker,
            threshold=speaker.threshold + EARLY_MARGIN,
            adult_threshold=speaker.adult_threshold + EARLY_MARGIN,
            margin=speaker.margin + EARLY_MARGIN,
        ),
    )
    mean = mean_print(prints[:EARLY_PARTIALS])
    try:
        match = identify(mean, voices, stricter)
    finally:
        mean.fill(0)
    if match.profile is None or any(identify(one, voices, config).profile != match.profile for one in prints[:EARLY_PARTIALS]):
        return None
    return match


def judge_prints(prints: NDArray[np.float32], voices: Mapping[str, Voiceprint], config: Config) -> Match:
    """The decision on a session's partials' prints (partials, 256), all of them computed:
    early_match on the first ones when there are more, else identify on their mean print.
    What edge.tagging.voice.judge_session decides while computing only the partials it needs."""
    if len(prints) > EARLY_PARTIALS:
        early = early_match(prints, voices, config)
        if early is not None:
            return early
    mean = mean_print(prints)
    try:
        return identify(mean, voices, config)
    finally:
        mean.fill(0)
