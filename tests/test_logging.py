"""What edge logs: the same words people read on stderr, and never what was said."""

from __future__ import annotations

import logging
import time

from edge import service, wiring
from edge.agent import SessionRecord
from edge.audio.wavfile import open_wav, read_pipeline_chunks

from support import WORDS, Retention, edge_agent


def test_a_whole_session_logs_no_word_said(caplog, load, model, speech):
    """Every record at every level, from the keystore's opening through sealing, the
    scheduler and a shred, holds no transcript text."""
    caplog.set_level(logging.DEBUG)
    config = load(mode="always", child=Retention("child", "1s", "2s"))
    clip = speech.join(speech.say(WORDS[0]), 1.0, speech.say(WORDS[1]), 1.0)
    records: list[SessionRecord] = []
    runtime = wiring.build_runtime(config, records.append, service.log_report, profile="child", model=model)
    runtime.keystore.read()
    runtime.retention.catch_up()
    runtime.retention.start()
    try:
        runtime.agent.run(read_pipeline_chunks(open_wav(clip)))
        time.sleep(2.5)  # everything the child kept is due
        service.log_report(runtime.shredder.sweep())
    finally:
        runtime.retention.stop()
    assert [r.text for r in records] == list(WORDS)  # the words were heard...
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "shredded audio bucket" in logged and "shredded transcript bucket" in logged  # ...and the log speaks
    for word in WORDS:
        assert word not in logged


def test_the_command_line_prints_the_log_in_the_words_people_read(write_config, speech):
    config = write_config(mode="always")
    ran = edge_agent("--config", str(config), "run", "--input", str(speech.join(speech.say(WORDS[0]), 1.0)), "--profile", "child")
    assert ran.returncode == 0, ran.stderr
    assert "edge-agent: 1 session(s) from" in ran.stderr
    assert WORDS[0] not in ran.stdout + ran.stderr
