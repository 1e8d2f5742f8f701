"""Enrolling a household member's voice: only the embedding is kept, sealed in the keystore.

The enrolment audio is read into memory, embedded and dropped: it is never written
anywhere. A child profile's voiceprint is a child's biometric data: it needs a parent's
explicit consent, which the audit log records (never the vector). Re-enrolling replaces
the old voiceprint and ratchets the root, so no copy of the old one opens again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from edge.config import Config, Profile
from edge.errors import AudioError, UsageError
from edge.events import VoiceEnrolled
from edge.policy import UNKNOWN_PROFILE
from edge.sink import AuditSink
from edge.store.keystore import Keystore
from edge.store.records import Voiceprint
from edge.voice.encoder import Embedding, SpeakerEncoder, average
from edge.voice.identify import ENCODER_ID, vector_bytes

MIN_SPEECH = 3.0
"""Seconds of speech (silences trimmed), over all clips, a voiceprint needs at least."""
CONSISTENT = 0.75
"""Lowest similarity of one clip to the others: below it, the clips are likely of two people
(espeak-ng's voices: 0.90-0.96 to their own other clips, 0.50-0.80 to another voice's)."""


@dataclass(frozen=True)
class Clip:
    """One enrolment utterance in memory: where it came from (for messages) and its pipeline PCM."""

    source: str
    pcm: bytes


def enroll(
    keystore: Keystore,
    audit: AuditSink,
    config: Config,
    encoder: SpeakerEncoder,
    profile_name: str,
    clips: Sequence[Clip],
    consent: bool,
    now: datetime,
) -> Voiceprint:
    """Embed the clips and keep their average as the profile's voiceprint."""
    profile = check_enrollable(config, profile_name, consent)
    if not clips:
        raise UsageError("voices enroll needs speech: give --input AUDIO [AUDIO ...] or --mic")
    prints, seconds = _embed_all(encoder, clips)
    try:
        if seconds < MIN_SPEECH:
            raise AudioError(
                f"{seconds:.1f} s of speech in all (silences trimmed) is too little for a voiceprint: record at least "
                f"{MIN_SPEECH:.0f} s, best several sentences of 3-5 s each"
            )
        voice = average(prints)
        _check_consistent(clips, prints, voice)
        voiceprint = Voiceprint(
            profile=profile_name,
            enrolled=now,
            heard=now,
            seconds=round(seconds, 1),
            utterances=len(clips),
            consent=consent,
            encoder=ENCODER_ID,
            vector=vector_bytes(voice),
        )
        voice.fill(0)
    finally:
        for vector in prints:
            vector.fill(0)
    with keystore.transaction() as data:
        if data.forgets:  # its voice.forgotten could come after this voice.enrolled
            raise UsageError("a forget is not finished yet: run `edge-agent purge` first (it finishes it), then enrol again")
        replaced = profile_name in data.voices
        audit.append(  # write-ahead: a crash before the commit leaves a logged consent and no voiceprint, never the reverse
            VoiceEnrolled(
                profile=profile_name,
                child=profile.is_child,
                consent=consent,
                seconds=voiceprint.seconds,
                utterances=voiceprint.utterances,
                replaced=replaced,
            )
        )
        data.voices[profile_name] = voiceprint
        if replaced:
            keystore.ratchet(data)  # the old voiceprint opens from no copy of the keystore
    return voiceprint


def check_enrollable(config: Config, profile_name: str, consent: bool) -> Profile:
    """The profile to enrol, checked before any audio is recorded: it exists, and a child's has consent."""
    names = [p.name for p in config.profiles]
    if profile_name not in names:
        hint = " (the strictest policy has no voice: it is for whoever is not recognised)" if profile_name == UNKNOWN_PROFILE else ""
        raise UsageError(f"there is no profile {profile_name!r} in {config.path}{hint}; the profiles are: {', '.join(names)}")
    profile = config.profile(profile_name)
    if profile.is_child and not consent:
        raise UsageError(
            f"{profile_name!r} is a child profile: a voiceprint is a child's biometric data, so a parent must consent "
            "to keeping it. Add --consent if you are the child's parent or guardian (the audit log records it)."
        )
    return profile


def _embed_all(encoder: SpeakerEncoder, clips: Sequence[Clip]) -> tuple[list[Embedding], float]:
    prints: list[Embedding] = []
    total = 0.0
    for clip in clips:
        try:
            embedding, seconds = encoder.embed_speech(clip.pcm)
        except AudioError as exc:
            for vector in prints:
                vector.fill(0)
            raise AudioError(f"{clip.source}: {exc}") from None
        prints.append(embedding)
        total += seconds
    return prints, total


def _check_consistent(clips: Sequence[Clip], prints: list[Embedding], voice: Embedding) -> None:
    """Each clip must sound like the rest: one recording of someone else would tag the wrong person."""
    if len(prints) < 2:
        return
    for clip, vector in zip(clips, prints, strict=True):
        others = average([p for p in prints if p is not vector])
        similarity = float(np.dot(vector, others))
        others.fill(0)
        if similarity < CONSISTENT:
            voice.fill(0)
            raise AudioError(
                f"{clip.source}: does not sound like the other clips (similarity {similarity:.2f}, at least "
                f"{CONSISTENT:.2f} expected): is it another person, or very noisy? Enrol one person at a time; "
                "nothing was kept"
            )
