"""`voices check`: how the enrolled voices would tag the household's own recordings.

Each labelled recording is cut into the sessions the agent would make of it
(edge.audio.utterances), and each is judged exactly as the tagger judges a session: the
same partials of its first seconds and the same rule, early decision included
(edge.tagging.voice, edge.voice.identify.judge_prints), as a session nobody named (no listener, no active profile), so a
clip the voice does not decide falls to the strictest policy. The error that matters is a
child's clip tagged as an adult: the check counts it, and suggests the adult_threshold that
keeps every child clip at least `headroom` below every adult's voiceprint, with what that
costs. It changes nothing, and keeps nothing: each clip's audio is overwritten once
embedded, the embeddings once the report is made.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.audio.utterances import utterances
from edge.config import Config, SpeakerSettings
from edge.errors import AudioError, UsageError
from edge.policy import UNKNOWN_PROFILE, Tag, strictest_policy
from edge.store.records import Voiceprint
from edge.tagging.voice import session_prints, tag_by_match
from edge.values import TagRule
from edge.voice.encoder import SpeakerEncoder, mean_print
from edge.voice.identify import EARLY_PARTIALS, comparable, identify, judge_prints


@dataclass(frozen=True)
class Source:
    """One labelled recording: whose voice it is (a profile, or `_unknown` for someone with
    none), its name in the report, and its pipeline PCM, read as the check goes."""

    label: str
    name: str
    chunks: Iterable[bytes]


@dataclass(frozen=True)
class Clip:
    """One session of a recording, and what tagging would make of it."""

    source: str
    label: str
    start: float
    end: float
    ranked: tuple[tuple[str, float], ...]
    """Every enrolled profile's score, best first; empty when there was too little speech."""
    tag: Tag
    """The tag the session would carry."""
    child: bool
    """The clip is a child's: its label is a child profile, or `_unknown` (who may be a child)."""
    right: bool
    """The voice chose the clip's profile (for a profile without a voiceprint, or `_unknown`: it chose nobody)."""
    child_as_adult: bool
    """A child's clip (or `_unknown`'s) the voice gave to an adult profile: the error that matters."""

    @property
    def name(self) -> str:
        return f"{self.source} {self.start:.1f}-{self.end:.1f} s"


@dataclass(frozen=True)
class Totals:
    clips: int
    right: int
    strictest: int
    """Clips the voice decided nothing for: the session gets the strictest policy."""
    wrong: int
    """Clips the voice gave to another profile than theirs."""
    child_clips: int
    child_as_adult: int
    too_short: int
    """Clips with too little speech to judge (they fall to the strictest too)."""

    @classmethod
    def of(cls, clips: Sequence[Clip]) -> Totals:
        return cls(
            clips=len(clips),
            right=sum(c.right for c in clips),
            strictest=sum(c.tag.rule is TagRule.STRICTEST for c in clips),
            wrong=sum(c.tag.rule is TagRule.VOICE and not c.right for c in clips),
            child_clips=sum(c.child for c in clips),
            child_as_adult=sum(c.child_as_adult for c in clips),
            too_short=sum(not c.ranked for c in clips),
        )


@dataclass(frozen=True)
class Suggestion:
    """[speaker] values that keep every child clip `headroom` below adult_threshold."""

    speaker: SpeakerSettings
    changed: bool
    closest: tuple[str, str, float]
    """(clip, adult profile, score): the highest score any child clip had with an adult's voiceprint."""
    then: Totals
    """The clips' totals with these values."""


@dataclass(frozen=True)
class CheckReport:
    config: Path
    speaker: SpeakerSettings
    voices: tuple[str, ...]
    """The profiles whose voiceprints were compared."""
    headroom: float
    clips: tuple[Clip, ...]
    silent: tuple[str, ...]
    """Recordings in which no speech was heard (nothing judged)."""
    totals: Totals
    suggestion: Suggestion | None
    no_suggestion: str
    """Why there is no suggestion, when there is none."""

    def lines(self) -> list[str]:
        """The report for a person: per clip, the totals, the suggestion. No audio, no vector."""
        speaker, totals = self.speaker, self.totals
        out = [
            f"checked {totals.clips} clip(s) against the voiceprints of {', '.join(self.voices)}, each as a session "
            "nobody named (no listener, no active profile)",
            f"with [speaker] {_values(speaker)} ({self.config})",
        ]
        if not speaker.identify:
            out.append("note: [speaker] identify = false: sessions are not tagged by voice now; this is what they would be with it on")
        out.append("")
        width = max((len(c.name) for c in self.clips), default=0)
        for clip in self.clips:
            best = f"{clip.ranked[0][0]} {clip.ranked[0][1]:.3f}" if clip.ranked else "-"
            second = f"{clip.ranked[1][0]} {clip.ranked[1][1]:.3f}" if len(clip.ranked) > 1 else "-"
            out.append(
                f"  {clip.name:<{width}}  {clip.label}: best {best}, second {second} -> {clip.tag.profile.name} "
                f"({clip.tag.rule}): {_verdict(clip)}"
            )
        out += [f"  {name}: no speech heard, nothing judged" for name in self.silent]
        out += [
            "",
            f"tagged right: {totals.right} of {totals.clips}",
            f"fall to the strictest policy (the voice decided nothing): {totals.strictest} of {totals.clips}"
            + (f" ({totals.too_short} with too little speech to judge)" if totals.too_short else ""),
            f"tagged as another profile: {totals.wrong}",
            f"CHILD CLIPS TAGGED AS AN ADULT: {totals.child_as_adult} of {totals.child_clips}"
            + (f" (the {UNKNOWN_PROFILE} clips count as a child's)" if any(c.label == UNKNOWN_PROFILE for c in self.clips) else ""),
            "",
        ]
        out += self._suggestion_lines()
        out.append(f"nothing was changed (edit [speaker] in {self.config} and restart the agent to use other values); no audio was kept")
        return out

    def _suggestion_lines(self) -> list[str]:
        found = self.suggestion
        if found is None:
            return [f"no suggestion: {self.no_suggestion}"]
        clip, adult, score = found.closest
        closest = f"the closest: {clip}, {score:.3f} with the voiceprint of {adult}"
        if not found.changed:
            return [
                f"no change suggested: every child clip stays at least {self.headroom:.2f} below adult_threshold "
                f"{self.speaker.adult_threshold:.2f} ({closest})"
            ]
        then = found.then
        return [
            f"suggested, to keep every child clip at least {self.headroom:.2f} below adult_threshold ({closest}):",
            "    [speaker]",
            f"    threshold = {found.speaker.threshold:.2f}",
            f"    adult_threshold = {found.speaker.adult_threshold:.2f}",
            f"    margin = {found.speaker.margin:.2f}",
            f"  with it: child clips tagged as an adult {then.child_as_adult} of {then.child_clips}; tagged right "
            f"{then.right} of {then.clips} (now {self.totals.right}); fall to the strictest {then.strictest} of {then.clips} "
            f"(now {self.totals.strictest})",
        ]

    def to_json(self) -> dict[str, Any]:
        found = self.suggestion
        return {
            "config": str(self.config),
            "speaker": _speaker_json(self.speaker),
            "voices": list(self.voices),
            "headroom": self.headroom,
            "clips": [
                {
                    "source": c.source,
                    "label": c.label,
                    "start": round(c.start, 3),
                    "end": round(c.end, 3),
                    "scores": [{"profile": p, "score": round(s, 4)} for p, s in c.ranked],
                    "profile": c.tag.profile.name,
                    "rule": str(c.tag.rule),
                    "right": c.right,
                    "child_as_adult": c.child_as_adult,
                }
                for c in self.clips
            ],
            "silent": list(self.silent),
            "totals": vars(self.totals),
            "suggestion": None
            if found is None
            else {
                "speaker": _speaker_json(found.speaker),
                "changed": found.changed,
                "closest": {"clip": found.closest[0], "profile": found.closest[1], "score": round(found.closest[2], 4)},
                "totals": vars(found.then),
            },
            "no_suggestion": self.no_suggestion if found is None else None,
        }


def _values(speaker: SpeakerSettings) -> str:
    return f"threshold = {speaker.threshold:.2f}, adult_threshold = {speaker.adult_threshold:.2f}, margin = {speaker.margin:.2f}"


def _speaker_json(speaker: SpeakerSettings) -> dict[str, Any]:
    return {
        "identify": speaker.identify,
        "threshold": speaker.threshold,
        "adult_threshold": speaker.adult_threshold,
        "margin": speaker.margin,
    }


def _verdict(clip: Clip) -> str:
    if clip.child_as_adult:
        return "CHILD TAGGED AS AN ADULT"
    if not clip.ranked:
        return "too little speech to judge" + (": right" if clip.right else "")
    if clip.right:
        return "right"
    return "falls to the strictest" if clip.tag.rule is TagRule.STRICTEST else "wrong profile"


def check_labels(config: Config, labels: Iterable[str]) -> None:
    """Every label names a profile of the config, or `_unknown`: checked before any audio is read."""
    names = [p.name for p in config.profiles]
    for label in labels:
        if label != UNKNOWN_PROFILE and label not in names:
            raise UsageError(
                f"{label!r} is not a profile in {config.path}; label a recording with one of: {', '.join(names)}, "
                f"or {UNKNOWN_PROFILE} for someone with no profile (a visitor: treated as a child)"
            )


def enrolled_for_check(config: Config, voices: Mapping[str, Voiceprint]) -> dict[str, Voiceprint]:
    """The voiceprints a session would be compared with; none is an error: nothing to check."""
    usable = comparable(voices, config)
    if not usable:
        held = f" ({', '.join(sorted(voices))}: of profiles no longer in the config, or made by another encoder)" if voices else ""
        raise UsageError(
            f"no voiceprint in {config.device.data_dir} can tag a session{held}, so there is nothing to check: "
            "enrol first (`edge-agent voices enroll PROFILE --input AUDIO ...`)"
        )
    return usable


@dataclass
class _Judged:
    source: str
    label: str
    start: float
    end: float
    prints: NDArray[np.float32] | None
    """Its partials' prints (partials, 256); None: too little speech."""


def check(
    config: Config,
    voices: Mapping[str, Voiceprint],
    encoder: SpeakerEncoder,
    sources: Iterable[Source],
    headroom: float,
) -> CheckReport:
    """Judge every session of every source with the current [speaker] values, and suggest the
    adult_threshold that keeps every child clip `headroom` below any adult's voiceprint.
    `encoder` must run with the tagging settings (edge.tagging.voice.tagging_encoder)."""
    enrolled = enrolled_for_check(config, voices)
    judged: list[_Judged] = []
    silent: list[str] = []
    try:
        for source in sources:
            heard = False
            for utterance in utterances(config, source.chunks):
                heard = True
                try:
                    prints: NDArray[np.float32] | None = session_prints(encoder, utterance.pcm)
                except AudioError:
                    prints = None  # too little speech: the tagger decides nothing either
                finally:
                    utterance.drop()
                judged.append(_Judged(source.name, source.label, utterance.start, utterance.end, prints))
            if not heard:
                silent.append(source.name)
        clips = [_clip(config, enrolled, item) for item in judged]
        suggestion, why = _suggest(config, enrolled, judged, clips, headroom)
    finally:
        for item in judged:
            if item.prints is not None:
                item.prints.fill(0)
    return CheckReport(
        config=config.path,
        speaker=config.speaker,
        voices=tuple(sorted(enrolled)),
        headroom=headroom,
        clips=tuple(clips),
        silent=tuple(silent),
        totals=Totals.of(clips),
        suggestion=suggestion,
        no_suggestion=why,
    )


def _is_child(config: Config, label: str) -> bool:
    return label == UNKNOWN_PROFILE or config.profile(label).is_child


def _clip(config: Config, enrolled: Mapping[str, Voiceprint], item: _Judged) -> Clip:
    """What the tagger makes of one session with `config`'s [speaker] values: its own functions."""
    base = Tag(strictest_policy(config), TagRule.STRICTEST)
    if item.prints is None:
        ranked: tuple[tuple[str, float], ...] = ()
        tag = base
    else:
        match = judge_prints(item.prints, enrolled, config)
        ranked, tag = match.ranked, tag_by_match(config, base, match)
    by_voice = tag.rule is TagRule.VOICE
    child = _is_child(config, item.label)
    return Clip(
        source=item.source,
        label=item.label,
        start=item.start,
        end=item.end,
        ranked=ranked,
        tag=tag,
        child=child,
        right=(by_voice and tag.profile.name == item.label) if item.label in enrolled else not by_voice,
        child_as_adult=child and by_voice and not tag.profile.is_child,
    )


def _all_scores(enrolled: Mapping[str, Voiceprint], config: Config, item: _Judged) -> list[tuple[str, float]]:
    """A clip's scores with every voiceprint, of each print a decision may be made on: the mean
    of all its partials and, when there are more, the mean of the first EARLY_PARTIALS."""
    if item.prints is None:
        return []
    ways = [item.prints[:EARLY_PARTIALS], item.prints] if len(item.prints) > EARLY_PARTIALS else [item.prints]
    scores: list[tuple[str, float]] = []
    for prints in ways:
        mean = mean_print(prints)
        scores += identify(mean, enrolled, config).ranked
        mean.fill(0)
    return scores


def _suggest(
    config: Config, enrolled: Mapping[str, Voiceprint], judged: Sequence[_Judged], clips: Sequence[Clip], headroom: float
) -> tuple[Suggestion | None, str]:
    """The lowest adult_threshold (at least the current one) that keeps every child clip's score
    with every adult's voiceprint `headroom` below it. Raising adult_threshold only turns
    decisions for an adult into no decision, so it can make no clip less safe."""
    adults = {name for name in enrolled if not config.profile(name).is_child}
    if not adults:
        return None, "no adult's voice is enrolled, so no clip can be tagged as an adult by voice"
    scores = [
        (clip.name, profile, score)
        for clip, item in zip(clips, judged, strict=True)
        if clip.child
        for profile, score in _all_scores(enrolled, config, item)
        if profile in adults
    ]
    if not scores:
        return None, (
            "no child clip with enough speech to judge: label recordings of each child with their profile "
            f"(or {UNKNOWN_PROFILE} for a visiting child) to measure the error that matters"
        )
    closest = max(scores, key=lambda item: item[2])
    needed = math.ceil(round((closest[2] + headroom) * 100, 6)) / 100
    if needed > 1:
        return None, (
            f"no adult_threshold keeps {closest[0]} {headroom:.2f} below it: it scores {closest[2]:.3f} with the voiceprint "
            f"of {closest[1]}. Re-enrol {closest[1]} (and the child) from the device's own microphone, or set "
            "[speaker] identify = false"
        )
    speaker = replace(config.speaker, adult_threshold=max(config.speaker.adult_threshold, needed))
    tuned = replace(config, speaker=speaker)
    then = Totals.of([_clip(tuned, enrolled, item) for item in judged])
    return Suggestion(speaker, speaker != config.speaker, closest, then), ""
