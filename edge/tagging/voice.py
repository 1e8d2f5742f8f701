"""Tagging by voice: the enrolled voiceprints against the voice of a session that has ended.

Fail closed and asymmetric: the voice decides only on a clear match (edge.voice.identify);
when it and a configured signal (the active or the listener's profile) disagree, the
stricter profile wins; an explicit --profile is never overruled. The session's embedding
lives in memory only and is overwritten once the decision is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from edge.config import Config, Profile
from edge.errors import AudioError, KeystoreError, ModelError
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES
from edge.policy import Tag, strictest_policy
from edge.store.keystore import Keystore
from edge.store.records import Voiceprint
from edge.values import TagRule

if TYPE_CHECKING:  # numpy and the weights load with the first voice, not with every command
    import numpy as np
    from numpy.typing import NDArray

    from edge.voice.encoder import EncoderSettings, SpeakerEncoder
    from edge.voice.identify import Match

log = logging.getLogger(__name__)

EMBED_SECONDS = 6.0
"""Seconds of a session's audio (from its start) the voice is judged on: enough for a
reliable print, and the cost stays bounded in long sessions."""
TAGGING_RATE = 1.0
"""Partials a second when tagging (enrolment keeps resemblyzer's 1.3): a third less CPU per
session, prints within cosine ~0.99 of the full rate's (docs/BENCHMARKS.md)."""


def tagging_settings() -> EncoderSettings:
    from edge.voice.encoder import EncoderSettings

    return EncoderSettings(rate=TAGGING_RATE)


def tagging_encoder() -> SpeakerEncoder:
    """The speaker encoder as tagging runs it (ModelError when its weights are missing)."""
    from edge.voice.encoder import SpeakerEncoder

    return SpeakerEncoder.load(settings=tagging_settings())


def session_mels(encoder: SpeakerEncoder, pcm: bytes | bytearray) -> NDArray[np.float32]:
    """The mel spectrograms of the partials a session is judged by: of its first EMBED_SECONDS
    (AudioError when there is too little speech)."""
    return encoder.partial_mels(bytes(pcm[: int(EMBED_SECONDS * PIPELINE_RATE) * SAMPLE_BYTES]))[0]


def session_prints(encoder: SpeakerEncoder, pcm: bytes | bytearray) -> NDArray[np.float32]:
    """The prints of every partial a session is judged by (what `voices check` keeps, to judge
    it as judge_session does with any [speaker] values). The caller overwrites them."""
    mels = session_mels(encoder, pcm)
    try:
        return encoder.embed_partials(mels)
    finally:
        mels.fill(0)


def judge_session(encoder: SpeakerEncoder, pcm: bytes | bytearray, voices: Mapping[str, Voiceprint], config: Config) -> Match:
    """Who a session's voice is (AudioError when there is too little speech): its first
    EARLY_PARTIALS partials first, and the rest only when those are not a clear match
    (edge.voice.identify.judge_prints: the same decision, the CPU of the partials not needed
    saved). Every print and spectrogram is overwritten before it returns."""
    import numpy as np

    from edge.voice.identify import EARLY_PARTIALS, early_match, judge_prints

    mels = session_mels(encoder, pcm)
    prints = encoder.embed_partials(mels[:EARLY_PARTIALS])
    try:
        if len(mels) > EARLY_PARTIALS:
            early = early_match(prints, voices, config)
            if early is not None:
                return early
            rest = encoder.embed_partials(mels[EARLY_PARTIALS:])
            prints, first = np.concatenate([prints, rest]), prints
            first.fill(0)
            rest.fill(0)
        return judge_prints(prints, voices, config)
    finally:
        prints.fill(0)
        mels.fill(0)


def tag_by_match(config: Config, base: Tag, match: Match) -> Tag:
    """The session's tag once its voice's match is known: the one rule tagging and
    `voices check` both apply."""
    return with_voice(config, base, config.profile(match.profile) if match.profile else None)


def with_voice(config: Config, base: Tag, voice: Profile | None) -> Tag:
    """Combine the configured tag with the profile the voice chose (None: no decision).
    The voice replaces a configured profile only when it is at least as strict in every
    respect (retention of each kind, child, training); when neither is, the household's
    strictest policy applies: a child's voice never lands on an adult's terms."""
    if voice is None or base.rule is TagRule.GIVEN:
        return base
    if base.rule is TagRule.STRICTEST:
        return Tag(voice, TagRule.VOICE)  # the only signal there is
    if voice.name == base.profile.name or at_least_as_strict(base.profile, voice):
        return base  # they agree, or the configured profile is the stricter
    if at_least_as_strict(voice, base.profile):
        return Tag(voice, TagRule.VOICE)
    return Tag(strictest_policy(config), TagRule.STRICTEST)  # they disagree and neither is stricter in all


def at_least_as_strict(one: Profile, other: Profile) -> bool:
    """Whether `one` keeps nothing longer than `other`, and is a child or refuses training wherever `other` does."""
    return (
        one.keep_audio <= other.keep_audio
        and one.keep_transcript <= other.keep_transcript
        and (one.is_child or not other.is_child)
        and (not one.allow_training or other.allow_training)
    )


class VoiceTagger:
    """Reads the enrolled voiceprints at each session's start and judges its voice at the end.
    The encoder loads on first need; if it cannot, tagging falls back to the configuration
    (logged once), which is the strict direction."""

    def __init__(self, config: Config, keystore: Keystore, make_encoder: Callable[[], SpeakerEncoder] = tagging_encoder) -> None:
        self.config = config
        self.keystore = keystore
        self._make_encoder = make_encoder
        self._encoder: SpeakerEncoder | None = None
        self._broken: str | None = None
        self._loading = threading.Lock()
        """Wyoming's workers judge utterances on several threads: the encoder loads once."""

    def enrolled(self) -> dict[str, Voiceprint]:
        """The voiceprints a session may be tagged by now; empty = tag by configuration only."""
        if not self.config.speaker.identify or self._broken is not None:
            return {}
        voices = self.keystore.read().voices
        if not voices:
            return {}
        from edge.voice.identify import comparable  # numpy: only once a voice is enrolled

        return comparable(voices, self.config)

    def decide(self, pcm: bytes | bytearray, base: Tag, voices: dict[str, Voiceprint]) -> Tag:
        """The session's tag once its voice is judged against `voices`."""
        if base.rule is TagRule.GIVEN or not voices:
            return base
        encoder = self._loaded()
        if encoder is None:
            return base
        try:
            match = judge_session(encoder, pcm, voices, self.config)
        except AudioError:
            return base  # too little speech to tell: as if no voice were enrolled
        except KeystoreError as exc:  # a damaged voiceprint, say
            log.error("this session is tagged without its voice: the voiceprints could not be compared (%s)", type(exc).__name__)
            return base
        except Exception as exc:  # noqa: BLE001 - fail closed: no decision is the configured tag, never a lost session
            log.error("this session is tagged without its voice: the speaker encoder failed (%s)", type(exc).__name__)
            return base
        return tag_by_match(self.config, base, match)

    def _loaded(self) -> SpeakerEncoder | None:
        with self._loading:
            if self._encoder is None and self._broken is None:
                try:
                    self._encoder = self._make_encoder()
                except ModelError as exc:
                    self._broken = str(exc)
                    log.warning("sessions are tagged without voices: the speaker encoder did not load: %s", exc)
            return self._encoder
