"""How tests/vectors/voice was made: clips spoken by espeak-ng, and what the original
resemblyzer 0.1.4 (with torch and librosa) computes from them, so tests/test_voice_encoder.py
checks edge.voice, which uses neither, against the real thing.

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch resemblyzer==0.1.4 "setuptools<70"  # webrtcvad needs pkg_resources
    /tmp/refenv/bin/python tests/vectors/voice/make.py

Made with torch 2.14.1, librosa 0.11.0, scipy 1.17.1, webrtcvad 2.0.10, espeak-ng 1.51 and
sox 14.4.2 on Debian 12. Writes the clips (16 kHz mono int16 WAV) and reference.json: for each
clip its voice print (resemblyzer's embed_utterance), the number of samples
preprocess_wav keeps, and for one clip the mel spectrogram (wav_to_mel_spectrogram of the
preprocessed wav, 10 ms frames x 40 bands).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import librosa
import numpy as np
import torch
from resemblyzer import VoiceEncoder, preprocess_wav, wav_to_mel_spectrogram

HERE = Path(__file__).resolve().parent
CLIPS = {
    # name: (voice, pitch, [text or seconds of silence, ...], sox effects)
    "m3-sentence": ("ko+m3", 50, ["아버지에게 메시지를 보내 주세요"], ["pad", "0.3", "0.3"]),
    "f5-short": ("ko+f5", 95, ["라디오를 켜 주세요"], ["pad", "0.2", "0.2"]),
    # quiet (volume normalisation raises it) with a long pause (silence trimming shortens it)
    "klatt4-quiet-pause": ("ko+klatt4", 50, ["보안 위치를 알려 주세요", 1.2, "메시지 아버지"], ["vol", "0.05", "pad", "0.4", "0.4"]),
}
MEL_CLIP = "f5-short"


def make_clip(name: str, voice: str, pitch: int, parts: list[str | float], effects: list[str], tmp: Path) -> Path:
    pieces = []
    for index, part in enumerate(parts):
        piece = tmp / f"{name}-{index}.wav"
        if isinstance(part, str):
            raw = tmp / "raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-w", str(raw), part], check=True)
            subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(piece)], check=True)
        else:
            subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(piece), "trim", "0", str(part)], check=True)
        pieces.append(str(piece))
    out = HERE / f"{name}.wav"
    subprocess.run(["sox", "-D", *pieces, str(out), *effects], check=True)  # -D: no dither, reproducible
    return out


def main() -> None:
    encoder = VoiceEncoder(device="cpu", verbose=False)
    reference: dict[str, object] = {
        "made_with": {"torch": torch.__version__, "librosa": librosa.__version__, "resemblyzer": "0.1.4"},
        "clips": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (voice, pitch, parts, effects) in CLIPS.items():
            path = make_clip(name, voice, pitch, parts, effects, Path(tmp))
            wav = preprocess_wav(path)  # librosa.load(sr=None): int16 / 32768, already 16 kHz
            embedding, partials, _ = encoder.embed_utterance(wav, return_partials=True)
            reference["clips"][name] = {  # type: ignore[index]
                "voice": voice,
                "pitch": pitch,
                "text": [p for p in parts if isinstance(p, str)],
                "kept_samples": len(wav),
                "partials": len(partials),
                "embedding": [float(format(x, ".9g")) for x in embedding],
            }
            if name == MEL_CLIP:
                mel = wav_to_mel_spectrogram(wav)
                reference["mel"] = {"clip": name, "frames": [[float(format(x, ".8g")) for x in row] for row in mel]}
    text = json.dumps(reference, ensure_ascii=False, separators=(",", ":"))
    (HERE / "reference.json").write_text(text + "\n", encoding="utf-8")
    print({name: (clip["kept_samples"], clip["partials"]) for name, clip in reference["clips"].items()})  # type: ignore[attr-defined]
    print("mel", np.asarray(reference["mel"]["frames"]).shape)  # type: ignore[index]


if __name__ == "__main__":
    main()
