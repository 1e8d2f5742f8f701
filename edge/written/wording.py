"""The policy in words: per profile (and the unknown speaker) and per kind of data, what it is
for, why it is kept, for how long, how it is deleted, what is never done with it, who can see
it and how to ask for its deletion; rendered as text, HTML or JSON (`edge-agent policy`).

Every sentence is made from the terms (terms.py) and nothing else, so the words cannot say
more than the version they carry.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from edge.crypto.guarantee import GuaranteeLevel
from edge.durations import format_duration, human
from edge.policy import UNKNOWN_PROFILE
from edge.written.terms import Terms

ASPECTS = ("purpose", "why_kept", "how_long", "deletion", "never", "who_sees", "ask_deletion")
LABELS = {
    "purpose": "what it is for",
    "why_kept": "why it is kept",
    "how_long": "how long",
    "deletion": "how it is deleted",
    "never": "what is never done",
    "who_sees": "who can see it",
    "ask_deletion": "how to ask for deletion",
}


def by_voice(terms: Terms) -> str:
    """What a household member can say to have their data forgotten ([voice_commands])."""
    spoken = terms.terms.get("voice_commands")
    if not spoken:
        return "Not offered: this household's config sets no spoken commands ([voice_commands]); use the commands."
    asks = []
    if "forget_last" in spoken:
        asks.append(f'say "{spoken["forget_last"]}" to forget your own latest kept session')
    if "forget_today" in spoken:
        asks.append(f'say "{spoken["forget_today"]}" to forget your own sessions since midnight')
    said = (" or ".join(asks)[:1].upper() + " or ".join(asks)[1:] + ". ") if asks else ""
    confirm = (
        f'Each waits for "{spoken["confirm"]}" from the same voice within {_span(spoken["confirm_window_seconds"])}. '
        if spoken.get("confirm") and asks
        else ""
    )
    guest = (
        f'"{spoken["guest_on"]}" keeps every session to the strictest policy for at most {_span(spoken["guest_limit_seconds"])}, '
        f'until an adult who was recognised says "{spoken["guest_off"]}"'
        + (f' and then "{spoken["confirm"]}". ' if spoken.get("confirm") else ". ")
        if "guest_on" in spoken
        else ""
    )
    return (
        f"{said}{confirm}{guest}A spoken command reaches only the profile its words were taken as, a child's never lengthens "
        "what is kept, and the command itself is not kept; each is audited."
    )


@dataclass(frozen=True)
class Clause:
    """One kind of data of one profile, each aspect in a sentence or two."""

    profile: str
    kind: str
    """"audio", "transcript", "voiceprint" or "audit log"."""
    seconds: int | None
    """How long it is kept at most, when that is a fixed duration (None: until an event)."""
    words: dict[str, str]


def _span(seconds: int) -> str:
    """A duration in words and exactly: "1 day (86400 s, 24h)"."""
    value = timedelta(seconds=seconds)
    return f"{human(value)} ({seconds} s, {format_duration(value)})"


def _erase(level: GuaranteeLevel) -> str:
    """How deletion works on this device, and what it is worth, in plain words."""
    return (
        "Cryptographic erase: its key (one per profile, kind and expiry window) is destroyed and the device's root "
        "key replaced, so nothing left on the device opens it; the encrypted file is then deleted. " + _where(level)
    )


def _where(level: GuaranteeLevel) -> str:
    """What the vault's guarantee level makes of an erase."""
    if level.crypto_erase:
        return f"The root key lives in the {level.backend} vault, off the memory card, so this holds even against a copy of the card."
    return (
        f"The root key lives in a file ({level.backend} vault) on the memory card, which may keep old copies of it: deletion is "
        "logical only, not proof against someone who copied the card."
    )


def _subject(terms: Terms, name: str) -> str:
    unknown = terms.terms["unknown_speakers"]
    if name == UNKNOWN_PROFILE:
        return "unknown speakers (nobody identified; treated as a child)"
    return f"{name} (also every unknown speaker)" if name == unknown else name


def clauses(terms: Terms, level: GuaranteeLevel) -> list[Clause]:
    """Every profile's clauses, then the audit log's."""
    facts = terms.terms
    caps = facts["child_caps"]
    out = []
    for name, profile in facts["profiles"].items():
        child = profile["kind"] == "child" or name == UNKNOWN_PROFILE
        heard = f"all of it goes sooner once {name} is unheard for {_span(profile['inactive_after_seconds'])}"
        forget = f"`edge-agent forget --session ID`, `edge-agent forget --profile {name}`, `--all` or `--before DATE`"
        training = (
            "Never used for training and never exported for it: the profile is a child's."
            if child
            else (
                "Exported for training only by `edge-agent export --purpose training`, which the profile consented to (allow_training); audited."
                if profile["training"]
                else "Never used for training and never exported for it: the profile did not consent."
            )
        )
        out.append(_audio(terms, name, profile, child, caps, level, heard, forget, training))
        out.append(_transcript(terms, name, profile, child, caps, level, heard, forget, training))
        out.append(_voiceprint(name, profile, level))
    out.append(
        Clause(
            "household",
            "audit log",
            None,
            {
                "purpose": "Proof of what happened: every session, access, refusal, shred and deletion request, hash-chained and signed.",
                "why_kept": "So that a parent or an auditor can check, from the device alone, that retention and deletion were honoured.",
                "how_long": "As long as the data folder exists; it holds ids, profile names, times and counts, never audio, transcript text, voiceprints or keys.",
                "deletion": "Removed with the data folder; its entries are never edited (any change breaks the chain and `audit verify` names it).",
                "never": "Never leaves the device unless someone with access to it copies it; holds nothing said.",
                "who_sees": "Whoever can read the data folder (root and the service user); parents through `edge-agent audit report` and `audit show`.",
                "ask_deletion": "Not by a command: it is the record that deletions happened.",
            },
        )
    )
    return out


def _audio(
    terms: Terms,
    name: str,
    profile: dict[str, Any],
    child: bool,
    caps: dict[str, int],
    level: GuaranteeLevel,
    heard: str,
    forget: str,
    training: str,
) -> Clause:
    seconds = profile["audio_seconds"]
    cap = f" A child's audio is capped at {_span(caps['audio_seconds'])} ([household] max_child_audio)." if child else ""
    kept = seconds > 0
    return Clause(
        name,
        "audio",
        seconds,
        {
            "purpose": "The recording of a session after the wake phrase (or push, or utterance), so the household can play it back.",
            "why_kept": (
                f"The household chose to keep {_subject(terms, name)}'s recordings for playback and review."
                if kept
                else "It is not kept: never written to storage."
            ),
            "how_long": (f"At most {_span(seconds)} from the session's start; {heard}.{cap}" if kept else f"Never stored (0 s).{cap}"),
            "deletion": _erase(level),
            "never": training + " Audio never leaves the device except by `edge-agent export` (audited, with its purpose).",
            "who_sees": "Nobody, unless a parent with access to the device exports it (`edge-agent export --purpose playback|review`); every export and refusal is audited.",
            "ask_deletion": f"{forget}. By voice: {by_voice(terms)}",
        },
    )


def _transcript(
    terms: Terms,
    name: str,
    profile: dict[str, Any],
    child: bool,
    caps: dict[str, int],
    level: GuaranteeLevel,
    heard: str,
    forget: str,
    training: str,
) -> Clause:
    seconds = profile["transcript_seconds"]
    cap = f" A child's transcripts are capped at {_span(caps['transcript_seconds'])} ([household] max_child_transcript)." if child else ""
    kept = seconds > 0
    listeners = [w for w in terms.terms["wyoming"] if w["profile"] in (name, None)]
    handed = (
        "The text of each utterance is handed, once, to the Wyoming client that sent it, through "
        + ", ".join(f'"{w["name"]}"' for w in listeners)
        + " (Home Assistant, say); what that client keeps is governed by it, not by edge."
        if listeners
        else "No Wyoming listener serves this profile, so its text leaves the device with no client."
    )
    return Clause(
        name,
        "transcript",
        seconds,
        {
            "purpose": "The words recognised on the device (offline) in a session, so that the assistant can act on them.",
            "why_kept": (
                f"The household chose to keep {_subject(terms, name)}'s transcripts as a record of what was heard."
                if kept
                else "It is not kept: never written to storage."
            ),
            "how_long": (f"At most {_span(seconds)} from the session's start; {heard}.{cap}" if kept else f"Never stored (0 s).{cap}"),
            "deletion": _erase(level) + " Forgetting a session deletes its audio and its transcript together.",
            "never": training + " " + handed,
            "who_sees": "No edge command shows a kept transcript's text; it is sealed on the device. The program that receives it at the time (a Wyoming client, or `run --json`'s reader) sees it then.",
            "ask_deletion": f"{forget}. By voice: {by_voice(terms)}",
        },
    )


def _voiceprint(name: str, profile: dict[str, Any], level: GuaranteeLevel) -> Clause:
    if name == UNKNOWN_PROFILE:
        words = dict.fromkeys(ASPECTS, "None is made: an unknown speaker's voice is never enrolled.")
        return Clause(name, "voiceprint", 0, words)
    consent = " A child's voiceprint is made only with a parent's --consent, audited." if profile["kind"] == "child" else ""
    span = _span(profile["inactive_after_seconds"])
    return Clause(
        name,
        "voiceprint",
        profile["inactive_after_seconds"],
        {
            "purpose": "256 numbers describing the voice, to tell who is speaking and so which retention applies; only if enrolled.",
            "why_kept": f"Kept only after `edge-agent voices enroll {name}`; the enrolment audio is never kept.{consent}",
            "how_long": f"Until {name} is unheard for {span}, or until it is forgotten.",
            "deletion": "Sealed under the root key; destroyed by replacing the root key. " + _where(level),
            "never": "Never used for training, never exported, never leaves the device.",
            "who_sees": "Nobody: `edge-agent voices list` names who is enrolled, never the numbers.",
            "ask_deletion": f"`edge-agent voices forget {name}`, `edge-agent forget --profile {name}` or `--all`. By voice: no spoken command forgets a voiceprint.",
        },
    )


def to_json(terms: Terms, level: GuaranteeLevel) -> dict[str, Any]:
    """The policy as `edge-agent policy --format json` writes it (docs/FORMATS.md)."""
    return {
        "version": terms.version,
        "terms": terms.terms,
        "vault": level.to_json(),
        "voice_requests": terms.terms.get("voice_commands"),
        "clauses": [{"profile": c.profile, "kind": c.kind, "seconds": c.seconds, **c.words} for c in clauses(terms, level)],
    }


def _heading(terms: Terms, level: GuaranteeLevel) -> list[str]:
    facts = terms.terms
    unknown = facts["unknown_speakers"]
    return [
        f"Retention policy, version {terms.version}",
        f"Made by edge from the household's config and vault ({level.backend}: {level.summary}).",
        f"A session nobody is identified in gets the strictest policy: {unknown}'s"
        + (" (a synthetic child profile of the shortest retention of each kind)" if unknown == UNKNOWN_PROFILE else "")
        + ".",
        "Nothing is ever transcribed off the device; speech is recognised offline.",
    ]


def to_text(terms: Terms, level: GuaranteeLevel) -> str:
    lines = [*_heading(terms, level), ""]
    profile = None
    for clause in clauses(terms, level):
        if clause.profile != profile:
            profile = clause.profile
            title = "the household" if profile == "household" else _subject(terms, profile)
            lines += [f"== {title} ==", ""]
        lines.append(f"-- {clause.kind} --")
        lines += [f"  {LABELS[a]}: {clause.words[a]}" for a in ASPECTS]
        lines.append("")
    return "\n".join(lines)


def to_html(terms: Terms, level: GuaranteeLevel) -> str:
    head = "".join(f"<p>{html.escape(line)}</p>" for line in _heading(terms, level)[1:])
    rows = []
    for clause in clauses(terms, level):
        title = "the household" if clause.profile == "household" else _subject(terms, clause.profile)
        cells = "".join(f"<tr><th>{html.escape(LABELS[a])}</th><td>{html.escape(clause.words[a])}</td></tr>" for a in ASPECTS)
        rows.append(f"<section><h2>{html.escape(title)}: {html.escape(clause.kind)}</h2><table>{cells}</table></section>")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>edge: retention policy</title>"
        "<style>body{font:15px system-ui,sans-serif;max-width:60em;margin:2em auto}th{text-align:left;vertical-align:top;width:12em}"
        "td,th{padding:.2em .5em;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>Retention policy, version <code>{html.escape(terms.short)}</code></h1><p><code>{terms.version}</code></p>{head}"
        + "".join(rows)
        + "</body></html>"
    )


def render(terms: Terms, level: GuaranteeLevel, form: str) -> str:
    if form == "json":
        return json.dumps(to_json(terms, level), indent=2, ensure_ascii=False) + "\n"
    if form == "html":
        return to_html(terms, level)
    return to_text(terms, level)
