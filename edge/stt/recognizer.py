"""Vosk, loaded once; one decoder per session; words with times.

A Vosk recognizer over a lookahead graph (HCLr + Gr, as in the small models) builds
a cache of the composed graph as it decodes; a fresh recognizer per session pays
that warm-up again and cost 30-50% more CPU than one long-lived recognizer. So each
grammar's recognizer is kept and reused: after a session's FinalResult() Vosk drops
the decoder and the feature pipeline (no audio, features or i-vector state carry
over); only the graph cache stays. Word times are made relative to the session.

Pitfalls handled here: the grammar is passed as JSON with ensure_ascii=False
(escaped Hangul is "missing in vocabulary" and yields nothing); the unknown-word
token differs between models ("[unk]" or "<UNK>") and is read from the model;
grammar words the model does not know are reported instead of silently ignored.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ModelError
from edge.pcm import PIPELINE_RATE
from edge.transcript import Transcript, Word

_UNKNOWN_TOKENS = ("[unk]", "<UNK>", "<unk>")


class Vocabulary:
    """Which words a model knows, read from words.txt or the symbol table inside the graph FST."""

    def __init__(self, model_dir: Path) -> None:
        self._words_txt: set[str] | None = None
        self._fst: Path | None = None
        for candidate in (model_dir / "graph" / "words.txt", model_dir / "words.txt"):
            if candidate.is_file():
                lines = candidate.read_text(encoding="utf-8", errors="replace").splitlines()
                self._words_txt = {line.split()[0] for line in lines if line.strip()}
                return
        for candidate in (model_dir / "graph" / "Gr.fst", model_dir / "graph" / "HCLG.fst"):
            if candidate.is_file():
                self._fst = candidate
                return

    @property
    def known(self) -> bool:
        """False when the model carries no readable word list (then nothing can be checked)."""
        return self._words_txt is not None or self._fst is not None

    def missing(self, words: Sequence[str]) -> list[str]:
        if self._words_txt is not None:
            return [w for w in words if w not in self._words_txt]
        if self._fst is None:
            return []
        # OpenFst symbol tables store each symbol as int32 length + UTF-8 bytes.
        with self._fst.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return [w for w in words if data.find(struct.pack("<i", len(w.encode())) + w.encode()) < 0]

    def unknown_token(self) -> str:
        missing = self.missing(list(_UNKNOWN_TOKENS))
        return next((t for t in _UNKNOWN_TOKENS if t not in missing), "[unk]") if self.known else "[unk]"


class SpeechModel:
    """A loaded Vosk model (~1-2 s and several hundred MiB: load it once per process)."""

    def __init__(self, model_dir: Path) -> None:
        import vosk

        vosk.SetLogLevel(-1)  # Kaldi logs to stderr; our own errors say what matters
        self.path = model_dir
        try:
            self._model = vosk.Model(str(model_dir))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(f"{model_dir}: the Vosk model failed to load ({exc}); is it complete?") from None
        self._vosk = vosk
        self.vocabulary = Vocabulary(model_dir)
        self.unknown_word = self.vocabulary.unknown_token()
        self._idle: dict[tuple[str, ...], list[_Recognizer]] = {}
        """Finished recognizers by grammar, warm for the next session."""

    def check_grammar(self, phrases: Sequence[str], where: str) -> None:
        """Refuse grammar words the model cannot output (Vosk would drop them with a log line)."""
        words = sorted({w for phrase in phrases for w in phrase.split()})
        missing = self.vocabulary.missing(words)
        if missing:
            raise ModelError(
                f"{where}: the model at {self.path} does not know the word(s) "
                f"{', '.join(repr(w) for w in missing)}; use words from the model's vocabulary"
            )

    def decoder(self, grammar: Sequence[str] = ()) -> Decoder:
        """A decoder for one session. With a grammar, Vosk only outputs those phrases (or the
        unknown token). Its recognizer is an idle one for the same grammar, or a new one."""
        key = tuple(dict.fromkeys(grammar))
        idle = self._idle.setdefault(key, [])
        return Decoder(idle.pop() if idle else self._recognizer(key), self.unknown_word, idle)

    def _recognizer(self, phrases: tuple[str, ...]) -> _Recognizer:
        if phrases:
            spec = json.dumps(list(phrases) + [self.unknown_word], ensure_ascii=False)
            recognizer = self._vosk.KaldiRecognizer(self._model, PIPELINE_RATE, spec)
        else:
            recognizer = self._vosk.KaldiRecognizer(self._model, PIPELINE_RATE)
        recognizer.SetWords(True)
        return _Recognizer(recognizer)


@dataclass
class _Recognizer:
    vosk: Any
    """A vosk.KaldiRecognizer."""
    fed: float = 0.0
    """Seconds of audio this recognizer has decoded in all; Vosk's word times count from its first use."""


class Decoder:
    """Feeds pipeline PCM to one Vosk recognizer and collects every result."""

    def __init__(self, recognizer: _Recognizer, unknown_word: str, idle: list[_Recognizer]) -> None:
        self._holder = recognizer
        self._recognizer = recognizer.vosk
        self._origin = recognizer.fed
        self._idle = idle
        self._unknown = unknown_word
        self._words: list[Word] = []
        self._finished = False
        self.seconds = 0.0
        """Seconds of audio decoded."""

    def feed(self, pcm: bytes) -> None:
        seconds = len(pcm) / (2 * PIPELINE_RATE)
        self.seconds += seconds
        self._holder.fed += seconds
        if self._recognizer.AcceptWaveform(pcm):
            self._collect(self._recognizer.Result())

    def finish(self) -> tuple[Word, ...]:
        """Flush the recognizer (once), hand it back for reuse, and return every word heard,
        unknown tokens removed."""
        if not self._finished:
            self._finished = True
            self._collect(self._recognizer.FinalResult())
            self._idle.append(self._holder)
        return tuple(self._words)

    def transcript(self) -> Transcript:
        words = self.finish()
        return Transcript(text=" ".join(w.word for w in words), words=words)

    def _collect(self, result_json: str) -> None:
        for item in json.loads(result_json).get("result", []):
            if item["word"] != self._unknown:
                start, end = (max(0.0, round(t - self._origin, 3)) for t in (item["start"], item["end"]))
                self._words.append(Word(item["word"], start, end, round(item["conf"], 3)))
