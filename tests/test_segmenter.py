"""Session boundaries on real speech: the real VAD, the real model, every trigger mode."""

import pytest

from edge import wiring
from edge.agent import SessionRecord
from edge.audio.segmenter import Segmenter, SegmenterSettings, WakeTrigger
from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.pcm import FRAME_BYTES
from edge.values import TriggerMode

from support import PHRASES


def run_file(config, model, path, push=False, profile=None):
    records: list[SessionRecord] = []
    agent = wiring.make_agent(config, model, records.append, profile=profile)
    if push:
        agent.push_to_talk()
    summary = agent.run(read_pipeline_chunks(open_wav(path)))
    return records, summary


def test_always_two_phrases_separated_by_silence_are_two_sessions(speech, model, load):
    path = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"), 1.0)
    records, summary = run_file(load(mode="always"), model, path)
    assert [r.text for r in records] == ["메시지", "아버지"]
    first, second = records
    assert first.end_reason == second.end_reason == "silence"
    # Each clip is ~1.3 s of speech+padding; the second starts after ~2.3 s of the first clip and the gap.
    clip = (speech.say("메시지").stat().st_size - 44) / 32000
    assert first.start < 0.6 < first.end <= clip + 1.0
    assert first.end < second.start
    assert clip + 1.0 < second.start + 0.35 < clip + 1.0 + 1.0
    assert abs(summary.seconds - (path.stat().st_size - 44) / 32000) < 0.05
    for record in records:
        (word,) = record.words
        assert record.start <= word.start < word.end <= record.end  # word times are stream offsets


def test_always_short_pause_stays_one_session(speech, model, load):
    path = speech.join(speech.say("라디오", pad=0.1), 0.2, speech.say("메시지", pad=0.1))
    records, _ = run_file(load(mode="always"), model, path)
    assert [r.text for r in records] == ["라디오 메시지"]


def test_max_length_cuts_a_long_session(speech, model, load):
    words = [speech.say(p, pad=0.05) for p in ["라디오", "메시지", "아버지", "위치", "보안"]]
    path = speech.join(*words, 1.0)
    records, _ = run_file(load(mode="always", max_session="2s"), model, path)
    assert len(records) >= 2
    assert records[0].end_reason == "max_length"
    assert records[0].end - records[0].start == pytest.approx(2.0, abs=0.05)


def test_wake_mode_drops_what_came_before_the_wake_phrase(speech, model, load):
    path = speech.join(speech.say("보안"), speech.say("아버지"), speech.say("라디오"), 0.5, speech.say("메시지"))
    records, summary = run_file(load(mode="wake"), model, path)
    assert [r.text for r in records] == ["메시지"]
    assert summary.wake_count == 1
    wake_end = 3 * (speech.say("보안").stat().st_size - 44) / 32000
    assert records[0].start > wake_end  # the session is the next utterance only


def test_wake_phrase_and_command_in_one_utterance(speech, model, load):
    # 0.6 s between 보안 and 라디오 is shorter than silence_end: all three words are one utterance.
    path = speech.join(speech.say("보안"), speech.say("라디오", pad=0.1), speech.say("위치", pad=0.1), 1.0)
    records, summary = run_file(load(mode="wake"), model, path)
    assert [r.text for r in records] == ["위치"] and summary.wake_count == 1
    speech_of_boan_ends = (speech.say("보안").stat().st_size - 44) / 32000 - 0.5
    assert records[0].start > speech_of_boan_ends  # the session starts at the wake phrase, not before


def test_wake_phrase_without_command_in_time_opens_nothing(speech, model, load):
    path = speech.join(speech.say("라디오"), 3.0, speech.say("메시지"))
    records, summary = run_file(load(mode="wake", wake_timeout="2s"), model, path)
    assert records == [] and summary.wake_count == 1


def test_wake_mode_without_wake_phrase_opens_nothing(speech, model, load):
    path = speech.join(speech.say("메시지"), speech.say("아버지"), speech.say("위치"))
    records, summary = run_file(load(mode="wake"), model, path)
    assert (records, summary.wake_count) == ([], 0), records


def test_push_to_talk_session_starts_at_the_push(speech, model, load):
    path = speech.join(speech.say("메시지"), 1.0, speech.say("아버지"))
    records, _ = run_file(load(mode="push_to_talk"), model, path, push=True)
    assert [r.text for r in records] == ["메시지"]  # one push, one session
    assert records[0].start == 0.0 and records[0].end_reason == "silence"


def test_push_to_talk_without_push_opens_nothing(speech, model, load):
    records, _ = run_file(load(mode="push_to_talk"), model, speech.say("메시지"))
    assert records == []


def test_push_to_talk_with_no_speech_times_out(speech, model, load):
    records, _ = run_file(load(mode="push_to_talk", wake_timeout="1s"), model, speech.silence(3.0), push=True)
    assert [(r.text, r.end_reason) for r in records] == [("", "no_speech")]
    assert records[0].end == pytest.approx(1.0, abs=0.05)


def _decoders_of(model, monkeypatch):
    """Every decoder the agent makes from now on, kept for inspection."""
    made = []
    make = model.decoder

    def spy(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(model, "decoder", spy)
    return made


def _seconds(path):
    return (path.stat().st_size - 44) / 32000


VOICES = [(175, 50), (130, 30), (220, 70)]  # (words per minute, pitch)


@pytest.mark.parametrize("speed,pitch", VOICES, ids=[f"s{s}p{p}" for s, p in VOICES])
def test_silence_inside_a_session_is_not_decoded_and_no_word_is_clipped(speech, model, load, monkeypatch, speed, pitch):
    """Words that start and stop right at long silences (no padding in the clips): the silences'
    middles are never decoded, yet every word is heard, at its own time in the stream, exactly
    as when every sample is decoded."""
    clips = [speech.say(p, speed=speed, pitch=pitch, pad=0.0) for p in PHRASES]
    path = speech.join(1.0, *[part for clip in clips for part in (clip, 1.5)])
    decoders = _decoders_of(model, monkeypatch)
    records, _ = run_file(load(mode="always", silence_end="3s", max_session="60s"), model, path)
    (record,) = records
    assert record.text == " ".join(PHRASES)
    (decoder,) = decoders
    padding = 0.21  # on each side of speech: what an utterance keeps before its onset
    assert decoder.skipped > len(PHRASES) * (1.5 - 2 * padding) - 0.5  # each silence less its padding, give or take the VAD
    onset = 1.0
    for word, clip in zip(record.words, clips, strict=True):
        assert onset - 0.1 <= word.start < word.end <= onset + _seconds(clip) + 0.1  # stream offsets, skipped silence counted
        onset += _seconds(clip) + 1.5
    everything = model.decoder(PHRASES)  # the same audio, every sample decoded
    for chunk in read_pipeline_chunks(open_wav(path)):
        everything.feed(chunk)
    assert everything.skipped == 0
    for heard, whole in zip(record.words, everything.finish(), strict=True):
        assert heard.word == whole.word and heard.conf == pytest.approx(whole.conf, abs=0.05)
        assert heard.start == pytest.approx(whole.start, abs=0.07)  # an onset clipped by one 30 ms frame moves it ~0.1 s
        assert heard.end == pytest.approx(whole.end, abs=0.15)  # how far a word's end runs into the silence varies more


def test_push_to_talk_silence_before_speech_is_not_decoded(speech, model, load, monkeypatch):
    clip = speech.say("메시지", pad=0.0)
    path = speech.join(3.0, clip, 1.0)
    decoders = _decoders_of(model, monkeypatch)
    records, _ = run_file(load(mode="push_to_talk"), model, path, push=True)
    assert [(r.text, r.start, r.end_reason) for r in records] == [("메시지", 0.0, "silence")]
    (word,) = records[0].words
    assert 2.9 <= word.start < word.end <= 3.1 + _seconds(clip)  # the 3 s before it still count
    assert decoders[0].skipped > 2.5


def test_session_open_at_end_of_input_is_closed(speech, model, load):
    path = speech.say("메시지", pad=0.0)
    records, _ = run_file(load(mode="always"), model, path)
    assert [(r.text, r.end_reason) for r in records] == [("메시지", "end_of_input")]


def test_profile_and_rule_are_recorded(speech, model, load):
    path = speech.say("메시지")
    records, _ = run_file(load(mode="always"), model, path, profile="parent")
    assert [(r.profile, r.rule) for r in records] == [("parent", "given")]
    records, _ = run_file(load(mode="always"), model, path)
    assert [(r.profile, r.rule) for r in records] == [("child", "strictest")]


class _Recorder:
    def __init__(self):
        self.calls = []

    def begin(self, offset):
        self.calls.append(("begin", round(offset, 2)))

    def audio(self, pcm, silent):
        self.calls.append(("audio", len(pcm)))

    def end(self, offset, reason):
        self.calls.append(("end", round(offset, 2), reason))


def test_held_utterance_is_wiped_from_ram(speech, model):
    """Wake mode keeps an utterance only until the spotter has seen it, then overwrites it."""
    settings = SegmenterSettings(mode=TriggerMode.WAKE, silence_end=0.8, max_session=15, wake_timeout=5, wake_phrase="라디오")
    sink = _Recorder()
    held_buffers = []
    segmenter = Segmenter(settings, sink, make_spotter=lambda: model.decoder(["라디오", "메시지", "보안"]))
    pcm = b"".join(read_pipeline_chunks(open_wav(speech.join(speech.say("보안"), 0.5))))
    pcm = pcm[: len(pcm) - len(pcm) % FRAME_BYTES]
    for index in range(0, len(pcm), FRAME_BYTES):
        segmenter.feed(pcm[index : index + FRAME_BYTES])
        trigger = segmenter._trigger
        assert isinstance(trigger, WakeTrigger)
        if trigger._held:  # the wake trigger holds the utterance
            held_buffers.append(trigger._held)
    assert held_buffers, "the utterance was held while it was spoken"
    assert all(len(buffer) == 0 for buffer in held_buffers)
    assert sink.calls == []


class _Heard:
    """A spotter that reports fixed words: the segmenter's wake decision is what is tested."""

    def __init__(self, conf):
        from edge.transcript import Word

        self.words = [Word("라디오", 0.3, 0.8, conf)]

    def feed(self, pcm):
        pass

    def finish(self):
        return self.words


@pytest.mark.parametrize("conf,wakes", [(0.5, 0), (0.79, 0), (0.8, 1), (1.0, 1)])
def test_wake_needs_confidence(speech, conf, wakes):
    settings = SegmenterSettings(mode=TriggerMode.WAKE, silence_end=0.8, max_session=15, wake_timeout=5, wake_phrase="라디오")
    segmenter = Segmenter(settings, _Recorder(), make_spotter=lambda: _Heard(conf))
    pcm = b"".join(read_pipeline_chunks(open_wav(speech.say("라디오"))))
    for index in range(0, len(pcm) - FRAME_BYTES, FRAME_BYTES):
        segmenter.feed(pcm[index : index + FRAME_BYTES])
    segmenter.finish()
    assert segmenter.wake_count == wakes
