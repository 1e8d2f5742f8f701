"""The audit event types (edge/events.py): docs/FORMATS.md's table names exactly the classes
and their fields, every event reads back as it was written, a bad field is one error naming
it, the signing rule is today's, and a type edge does not know still verifies."""

from __future__ import annotations

import dataclasses
import re
import typing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge.audit.log import _FORBIDDEN_FIELDS, AuditLog, canonical
from edge.audit.story import read_story
from edge.audit.verify import verify
from edge.events import (
    EVENTS,
    MUST_BE_SIGNED,
    AuditEvent,
    ClockRewound,
    EventError,
    ForgetRequested,
    Instant,
    SessionCreated,
    SessionServed,
    Shred,
    UnknownEvent,
    VoiceForgotten,
    read,
)
from edge.values import DataKind, ShredReason

FORMATS = Path(__file__).resolve().parent.parent / "docs" / "FORMATS.md"


def documented() -> dict[str, set[str]]:
    """docs/FORMATS.md section 6's event table: type -> field names. A row may name several
    types (`a` / `b`) with one group of fields each (split by ` / `), or one group for all;
    a field is a name in backticks outside parentheses and before the first colon."""
    section = FORMATS.read_text(encoding="utf-8").split("**Event types**", 1)[1]
    rows = re.findall(r"^\| (`.+?) \| (.+) \|$", section.split("\n\n## ", 1)[0], re.MULTILINE)
    table: dict[str, set[str]] = {}
    for types_cell, fields_cell in rows:
        types = re.findall(r"`([^`]+)`", _bare(types_cell))
        groups = [set(re.findall(r"`([^`]+)`", group)) for group in _bare(fields_cell).split(":", 1)[0].split(" / ")]
        assert len(groups) in (1, len(types)), f"FORMATS.md: the row of {types} has {len(groups)} groups of fields"
        for index, name in enumerate(types):
            assert name not in table, f"FORMATS.md: {name} has two rows"
            table[name] = groups[index if len(groups) > 1 else 0]
    return table


def _bare(cell: str) -> str:
    """The cell without what is in parentheses (innermost first)."""
    while (shorter := re.sub(r"\([^()]*\)", "", cell)) != cell:
        cell = shorter
    return cell


def keys_of(cls: type[AuditEvent]) -> set[str]:
    return {field.metadata.get("key", field.name) for field in dataclasses.fields(cls)}


def test_formats_table_names_every_event_class_with_its_fields():
    table = documented()
    assert len(table) > 20, "the table was not found"
    assert set(table) == set(EVENTS), "docs/FORMATS.md section 6 and edge/events.py name different event types"
    differ = {name: (table[name], keys_of(cls)) for name, cls in EVENTS.items() if table[name] != keys_of(cls)}
    assert differ == {}, "fields in FORMATS.md (left) and in edge/events.py (right) differ"


def test_formats_says_which_events_a_verifier_requires_signed():
    text = " ".join(FORMATS.read_text(encoding="utf-8").split())
    sentence = text.split("A verifier MUST therefore reject a log whose entries after its last checkpoint", 1)[1].split("naming", 1)[0]
    assert set(re.findall(r"`([^`]+)`", sentence)) == MUST_BE_SIGNED


def test_the_table_check_sees_a_missing_field():
    """Positive control: a row that lost a field, or a class the table lacks, is seen."""
    row = "| `cleanup` | `files` (orphaned ciphertext deleted) |"
    assert row in FORMATS.read_text(encoding="utf-8")
    assert _bare("`files` (orphaned `x` deleted), `more`") == "`files` , `more`"
    assert keys_of(ClockRewound) == {"request", "seconds", "from", "to", "buckets", "sessions", "resumed"}


# -- every event reads back as written ---------------------------------------------------------

_SAMPLES: dict[Any, Any] = {
    str: "x",
    int: 3,
    float: 1.5,
    bool: True,
    list[str]: ["a", "b"],
    dict[str, Any]: {"profiles": {"child": {"audio_seconds": 3600, "transcript_seconds": 604800}}},
    DataKind: DataKind.TRANSCRIPT,
    Instant: "2026-12-07T10:00:00+00:00",
}


def sample(cls: type[AuditEvent]) -> AuditEvent:
    """An instance with every field set (a date where a date is checked)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    values = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if typing.get_origin(hint) is not None and type(None) in typing.get_args(hint):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        values[field.name] = "2026-12-07T10:00:00+00:00" if field.name.endswith("_expires") else _SAMPLES[hint]
    return cls(**values)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_every_event_reads_back_as_it_was_written(name):
    event = sample(EVENTS[name])
    fields = event.to_fields()
    assert set(fields) == keys_of(EVENTS[name])
    assert read(name, fields) == event
    assert not {key for key in fields if key.lower() in _FORBIDDEN_FIELDS}, "a field whose name says it could carry private data"


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_a_missing_or_ill_typed_field_is_one_error_naming_it(name):
    cls = EVENTS[name]
    fields = sample(cls).to_fields()
    for key in fields:
        required = next(f for f in dataclasses.fields(cls) if f.metadata.get("key", f.name) == key).default is dataclasses.MISSING
        if required:
            with pytest.raises(EventError) as missing:
                cls.parse({k: v for k, v in fields.items() if k != key})
            assert (missing.value.event_type, missing.value.field_name, str(missing.value)) == (name, key, repr(key))
        ill_typed = ["a", "list"] if isinstance(fields[key], dict) else {"an": "object"}
        with pytest.raises(EventError) as wrong:
            cls.parse({**fields, key: ill_typed})
        assert (wrong.value.event_type, wrong.value.field_name) == (name, key) and str(wrong.value).startswith(key)


def test_what_is_written_only_sometimes_is_left_out_otherwise():
    """Byte for byte what the writers wrote before the classes: `resumed` and `backstop` only
    when true, a forgotten voice's `request` or `heard`, a rewind's `from` by that name."""
    assert ForgetRequested(request="r", selector="everything", sessions=2).to_fields() == {
        "request": "r",
        "selector": "everything",
        "sessions": 2,
    }
    assert ForgetRequested(request="r", selector="everything", sessions=2, resumed=True).to_fields()["resumed"] is True
    assert set(VoiceForgotten(profile="p", reason=ShredReason.INACTIVE, heard="2026-12-07T10:00:00+00:00").to_fields()) == {
        "profile",
        "reason",
        "heard",
    }
    rewound = ClockRewound(request="r", seconds=60, to="b", buckets=1, sessions=2, from_="a")
    assert canonical(rewound.to_fields()) == b'{"buckets":1,"from":"a","request":"r","seconds":60,"sessions":2,"to":"b"}'
    shred = Shred("b", DataKind.AUDIO, "child", ShredReason.EXPIRED, ["s"], "2026-12-07T10:00:00+00:00", 0.5, True, 0.0)
    assert "backstop" not in shred.to_fields() and dataclasses.replace(shred, backstop=True).to_fields()["backstop"] is True
    assert canonical(shred.to_fields()).startswith(b'{"bucket":"b","clock_synced":true,"expires":')


def test_an_older_edges_lines_still_read():
    """Fields added after a type was first written have defaults; fields edge does not know are ignored."""
    served = {
        "session": "s",
        "source": "wyoming",
        "listener": "l",
        "profile": "p",
        "seconds": 1.0,
        "characters": 0,
        "end_reason": "stopped",
    }
    assert SessionServed.parse(served).kept is None
    assert read("root.lost", {"backend": "keyring"}) == read("root.lost", {"backend": "keyring", "reason": "", "later": 1})


def test_which_events_are_signed_in_their_write():
    """Today's rule (docs/FORMATS.md, 'Checkpoints' and 'The tail')."""
    signed = {name for name, cls in EVENTS.items() if sample(cls).needs_checkpoint}
    assert signed == {
        "agent.started",
        "agent.stopped",
        "clock.rewound",
        "forget.fulfilled",
        "log.recovered",
        "log.unsigned",
        "profile.active",
        "session.sealed",
        "session.served",
        "shred",
        "voice.command",
        "witness.cosigned",
    }
    assert MUST_BE_SIGNED == {"shred", "forget.fulfilled", "agent.stopped"}
    keeps_nothing = SessionCreated("s", "child", "given", True, None, None, None, None)
    assert keeps_nothing.needs_checkpoint and not dataclasses.replace(keeps_nothing, audio_bucket="b").needs_checkpoint


def test_a_type_edge_does_not_know_still_verifies_and_is_left_out_of_the_report(tmp_path):
    """An older or newer edge's type: read as an UnknownEvent, checked for its place in the
    chain only (as before the classes); `append` never writes one."""
    log = AuditLog(tmp_path)
    log.append(ForgetRequested(request="r", selector="everything", sessions=0))
    last, _ = log._last_entry()
    assert last is not None
    lines, _ = log._chained(last, [("future.event", {"anything": [1, {"x": None}]}, True)], True, [])  # as a newer edge would
    log._persist(lines)
    assert [e["type"] for e in log.entries()][-2:] == ["future.event", "checkpoint"]
    result = verify(log, None, datetime.now(timezone.utc), timedelta(seconds=1))
    assert result.problems[0].message == "forget request r was never fulfilled; run the forget again"  # and nothing about the unknown line
    assert len(result.problems) == 1
    assert read("future.event", {"a": 1}) == UnknownEvent("future.event", {"a": 1})
    story = read_story(list(log.entries()))
    assert [row.what for row in story.forgets] == ["asked to forget everything: none was kept"]
