"""The WAV file source: many formats in, exact pipeline PCM out; bad files refused by name."""

import shutil
import struct

import numpy as np
import pytest

from edge.audio.wavfile import open_wav, read_pipeline_chunks
from edge.errors import AudioError

from support import PHRASES, edge_agent

FORMATS = [
    # (id, suffix, sox arguments)
    ("8k-mono-16bit", ".wav", ["-r", "8000"]),
    ("22k-mono-8bit", ".wav", ["-r", "22050", "-b", "8"]),
    ("44k-stereo-16bit", ".wav", ["-r", "44100", "-c", "2"]),
    ("48k-stereo-24bit", ".wav", ["-r", "48000", "-c", "2", "-b", "24"]),
    ("32k-mono-32bit", ".wav", ["-r", "32000", "-b", "32"]),
    ("16k-mono-float", ".wav", ["-e", "floating-point", "-b", "32"]),
    ("48k-6ch-16bit", ".wav", ["-r", "48000", "-c", "6"]),
]


def pipeline_pcm(path):
    return b"".join(read_pipeline_chunks(open_wav(path)))


def test_pipeline_wav_passes_through_bit_exact(speech):
    path = speech.say("메시지")
    pcm = pipeline_pcm(path)
    raw = path.read_bytes()
    assert pcm == raw[raw.index(b"data") + 8 :]


@pytest.mark.parametrize("name,suffix,args", FORMATS, ids=[f[0] for f in FORMATS])
def test_formats_are_converted_and_transcribed_exactly(speech, model, name, suffix, args):
    source = speech.say("아버지")
    converted = speech.convert(source, suffix, *args)
    info = open_wav(converted)
    pcm = pipeline_pcm(converted)
    # Same duration at 16 kHz, within the resampler's rounding.
    assert abs(len(pcm) / 2 / 16000 - info.seconds) < 0.01
    decoder = model.decoder(PHRASES)
    decoder.feed(pcm)
    assert decoder.transcript().text == "아버지"


def test_resampled_audio_keeps_its_shape(speech):
    """The 44.1 kHz stereo version resampled back must match the original closely (real resampler)."""
    source = speech.say("위치")
    original = np.frombuffer(pipeline_pcm(source), "<i2").astype(float)
    converted = np.frombuffer(pipeline_pcm(speech.convert(source, ".wav", "-r", "44100", "-c", "2")), "<i2").astype(float)
    n = min(len(original), len(converted))
    correlation = np.corrcoef(original[:n], converted[:n])[0, 1]
    assert correlation > 0.98


def _riff(data: bytes, declared: int | None = None) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


BAD_FILES = [
    # (id, file bytes or a maker, expected message)
    ("empty file", b"", "not an audio file edge can read"),
    ("text file", b"hello, this is not audio\n", "ffmpeg -i INPUT -ar 16000 -ac 1 OUTPUT.wav"),
    ("riff but not wave", b"RIFF\x10\x00\x00\x00AVI LIST\x00\x00\x00\x00", "not an audio file edge can read"),
    ("header only, no samples", _riff(b""), "contains no audio"),
    ("truncated data", _riff(b"\x01\x00" * 1000, declared=64000), "truncated"),
    ("no data chunk", _riff(b"\x01\x00" * 10)[: 12 + 8 + 16], "no audio data chunk"),
    (
        "garbage fmt",
        b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 16 + b"data\x00\x00\x00\x00",
        "not an audio file edge can read",
    ),
]


@pytest.mark.parametrize("name,content,expected", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_wav_files_are_refused_by_name(tmp_path, name, content, expected):
    path = tmp_path / "input.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as error:
        open_wav(path)
    assert str(error.value).startswith(str(path))
    assert expected in str(error.value)


def test_missing_and_folder(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        open_wav(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="is a folder"):
        open_wav(tmp_path)


OTHER_FORMATS = [("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"), ("opus", "OGG", "OPUS"), ("mp3", "MP3", "MPEG_LAYER_III")]


@pytest.mark.parametrize(("suffix", "container", "subtype"), OTHER_FORMATS, ids=[f[0] for f in OTHER_FORMATS])
def test_flac_ogg_opus_and_mp3_are_transcribed(speech, tmp_path, suffix, container, subtype):
    """libsndfile decodes them (issue 18): the same words as from the WAV, whatever the name says."""
    import soundfile

    samples, rate = soundfile.read(str(speech.join(speech.say("보안"), 0.5, speech.say("위치"))), dtype="int16")
    encoded = tmp_path / f"speech.{suffix}"
    if subtype == "OPUS":  # Opus runs at 48 kHz only (sample-and-hold is enough for this check)
        samples, rate = np.repeat(samples, 3), 48000
    soundfile.write(str(encoded), samples, rate, format=container, subtype=subtype)
    disguised = tmp_path / "speech.wav"
    shutil.copy(encoded, disguised)  # the name does not matter, the content does
    assert open_wav(disguised).seconds > 1
    ran = edge_agent("transcribe", str(disguised), "--grammar", "보안", "위치")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "보안 위치"


@pytest.mark.parametrize("name,content,expected", BAD_FILES[:5], ids=[b[0] for b in BAD_FILES[:5]])
def test_cli_bad_wav_is_one_paragraph_and_nonzero(tmp_path, name, content, expected):
    path = tmp_path / "input.wav"
    path.write_bytes(content)
    for command in (["transcribe", str(path)], ["run", "--input", str(path)]):
        result = edge_agent(*command)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
        assert f"edge-agent: {path}" in result.stderr and expected in result.stderr
        assert result.stdout == ""
