"""Vosk, loaded once; one decoder per session; words with times.

A Vosk recognizer over a lookahead graph (HCLr + Gr, as in the small models) builds
a cache of the composed graph as it decodes; a fresh recognizer per session pays
that warm-up again and cost 30-50% more CPU than one long-lived recognizer. So each
grammar's recognizer is kept and reused: after a session's FinalResult() Vosk drops
the decoder and the feature pipeline (no audio, features or i-vector state carry
over); only the graph cache stays. Word times are made relative to the session.

Only speech needs decoding, and Vosk spends almost as much CPU on a second of
silence as on a second of speech. A decoder told which audio is silent (the
segmenter's VAD verdicts) decodes `padding` seconds of each silence after speech
and `padding` seconds before the next speech, and skips the middle of a longer
silence; word times still count the skipped audio.

Pitfalls handled here: the grammar is passed as JSON with ensure_ascii=False
(escaped Hangul is "missing in vocabulary" and yields nothing); the unknown-word
token differs between models ("[unk]" or "<UNK>") and is read from the model;
grammar words the model does not know are reported instead of silently ignored
(edge.stt.vocabulary says how).
"""

from __future__ import annotations

import bisect
import functools
import json
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ModelError
from edge.pcm import PIPELINE_RATE, SAMPLE_BYTES
from edge.stt.vocabulary import describe, unheard
from edge.transcript import Transcript, Word

_UNKNOWN_TOKENS = ("[unk]", "<UNK>", "<unk>")
_EPSILON = "<eps>"
"""Symbol 0 of every Kaldi word table: absent only when the model has no word table at all."""
_CHUNK_BYTES = 4000
"""Audio handed to Vosk per call (125 ms, as vosk-transcriber does)."""


@functools.cache
def _kept_at_exit(base: Any) -> Any:
    """`base` (a vosk class) whose native object is freed as usual, except while the interpreter
    shuts down: then the operating system takes the memory back at once, where Kaldi's
    destructors would spend ~0.3 s of CPU taking the model's graphs apart."""
    finalizing, free = sys.is_finalizing, base.__del__  # bound now: module globals are gone by then

    def __del__(self: Any) -> None:
        if not finalizing():
            free(self)

    return type(base.__name__, (base,), {"__del__": __del__})


class Vocabulary:
    """Which words a loaded model knows: Vosk's own word table (words.txt, or the graph's
    output symbols), looked up without reading the model's files again."""

    def __init__(self, model: Any) -> None:
        self._model = model
        """A vosk.Model."""

    @property
    def known(self) -> bool:
        """False when the model carries no word table (then nothing can be checked)."""
        return bool(self._model.vosk_model_find_word(_EPSILON) >= 0)

    def missing(self, words: Sequence[str]) -> list[str]:
        if not self.known:
            return []
        return [w for w in words if self._model.vosk_model_find_word(w) < 0]

    def unknown_token(self) -> str:
        missing = self.missing(_UNKNOWN_TOKENS)
        return next((t for t in _UNKNOWN_TOKENS if t not in missing), "[unk]") if self.known else "[unk]"


class SpeechModel:
    """A loaded Vosk model (~1-2 s and several hundred MiB: load it once per process)."""

    def __init__(self, model_dir: Path) -> None:
        import vosk  # ~0.1 s of imports: only the commands that listen pay for them

        vosk.SetLogLevel(-1)  # Kaldi logs to stderr; our own errors say what matters
        self.path = model_dir
        try:
            self._model = _kept_at_exit(vosk.Model)(str(model_dir))
        except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
            raise ModelError(f"{model_dir}: the Vosk model failed to load ({exc}); is it complete?") from None
        self._recognizer_class = _kept_at_exit(vosk.KaldiRecognizer)
        self.vocabulary = Vocabulary(self._model)
        self.unknown_word = self.vocabulary.unknown_token()
        self._idle: dict[tuple[str, ...], list[_Recognizer]] = {}
        """Finished recognizers by grammar, warm for the next session."""
        self._idle_lock = threading.Lock()

    def check_grammar(self, phrases: Sequence[str], where: str) -> None:
        """Refuse grammar words the model cannot output (Vosk would drop them with a log line);
        `where` is the option that gave them. The config's trigger: `check_trigger_words`."""
        problem = unheard(where, where, phrases, self.vocabulary)
        if problem is not None:
            raise ModelError(describe([problem], self.path))

    def decoder(self, grammar: Sequence[str] = (), padding: float | None = None) -> Decoder:
        """A decoder for one session. With a grammar, Vosk only outputs those phrases (or the
        unknown token). Its recognizer is an idle one for the same grammar, or a new one.
        With `padding` (seconds), audio fed as silent is decoded only that close to speech;
        without it, everything fed is decoded."""
        key = tuple(dict.fromkeys(grammar))
        with self._idle_lock:  # Wyoming utterances start on several threads at once
            idle = self._idle.setdefault(key, [])
            recognizer = idle.pop() if idle else None
        return Decoder(recognizer or self._recognizer(key), self.unknown_word, idle, padding)

    def decoded_bytes(self) -> int:
        """Audio handed to Vosk so far by the recognizers now idle (each session's goes back at
        its end): what the tests and the bench hold the decoder's work to."""
        with self._idle_lock:
            return sum(recognizer.fed for idle in self._idle.values() for recognizer in idle)

    def _recognizer(self, phrases: tuple[str, ...]) -> _Recognizer:
        if phrases:
            spec = json.dumps(list(phrases) + [self.unknown_word], ensure_ascii=False)
            recognizer = self._recognizer_class(self._model, PIPELINE_RATE, spec)
        else:
            recognizer = self._recognizer_class(self._model, PIPELINE_RATE)
        recognizer.SetWords(True)
        return _Recognizer(recognizer)


@dataclass
class _Recognizer:
    vosk: Any
    """A vosk.KaldiRecognizer."""
    fed: int = 0
    """Bytes of audio this recognizer has decoded in all; Vosk's word times count from its first use."""


class _Timeline:
    """Maps the recognizer's clock (only the audio it decoded) back to the session's clock
    (all the audio, skipped silence included)."""

    def __init__(self, origin: float) -> None:
        self._cuts = [origin]
        """Recognizer times at which skipped audio was left out, the first one the session's start."""
        self._shifts = [-origin]
        """What to add to a recognizer time at or after each cut."""

    def skipped(self, at: float, seconds: float) -> None:
        self._cuts.append(at)
        self._shifts.append(self._shifts[-1] + seconds)

    def session_time(self, recognizer_time: float) -> float:
        index = max(0, bisect.bisect_right(self._cuts, recognizer_time) - 1)
        return max(0.0, round(recognizer_time + self._shifts[index], 3))


class Decoder:
    """Feeds pipeline PCM to one Vosk recognizer and collects every result."""

    def __init__(self, recognizer: _Recognizer, unknown_word: str, idle: list[_Recognizer], padding: float | None = None) -> None:
        self._holder = recognizer
        self._recognizer = recognizer.vosk
        self._idle = idle
        self._unknown = unknown_word
        self._timeline = _Timeline(_seconds(recognizer.fed))
        self._padding = None if padding is None else round(padding * PIPELINE_RATE) * SAMPLE_BYTES
        """Bytes of silence decoded next to speech (None: decode all)."""
        self._quiet = self._padding or 0
        """Bytes of silence since the last speech; a session starts as if after a silence."""
        self._held = bytearray()
        """The latest silence not decoded yet: the padding before speech, if speech comes."""
        self._pending = bytearray()
        """Audio decoded but not handed to Vosk yet (it is handed over in chunks)."""
        self._unmapped = 0
        """Bytes skipped since the last speech, not yet on the timeline."""
        self._left_out = 0
        self._words: list[Word] = []
        self._finished = False

    @property
    def skipped(self) -> float:
        """Seconds of silence left out so far: never decoded."""
        return _seconds(self._left_out)

    def feed(self, pcm: bytes, silent: bool = False) -> None:
        """The session's next audio; `silent` when the VAD heard no speech in it."""
        if not silent or self._padding is None:
            self._resume()
            self._decode(pcm)
        elif self._quiet < self._padding:  # the silence right after speech
            self._quiet += len(pcm)
            self._decode(pcm)
        else:  # keep only the latest `padding` of it: the pre-roll of the next speech
            self._held += pcm
            excess = len(self._held) - self._padding
            if excess > 0:
                self._unmapped += excess
                self._left_out += excess
                del self._held[:excess]

    def finish(self) -> tuple[Word, ...]:
        """Flush the recognizer (once), hand it back for reuse, and return every word heard,
        unknown tokens removed. Silence still held after the last speech is never decoded."""
        if not self._finished:
            self._finished = True
            self._flush()
            self._collect(self._recognizer.FinalResult())
            self._idle.append(self._holder)
            self._left_out += len(self._held)
            self._held[:] = bytes(len(self._held))  # overwrite before release
            self._held.clear()
        return tuple(self._words)

    def transcript(self) -> Transcript:
        words = self.finish()
        return Transcript(text=" ".join(w.word for w in words), words=words)

    def _resume(self) -> None:
        """Speech (or audio to decode whole): the held silence is decoded first, as its pre-roll."""
        self._quiet = 0
        if self._unmapped:
            self._timeline.skipped(_seconds(self._holder.fed + len(self._pending)), _seconds(self._unmapped))
            self._unmapped = 0
        if self._held:
            self._decode(bytes(self._held))
            self._held.clear()

    def _decode(self, pcm: bytes) -> None:
        self._pending += pcm
        if len(self._pending) >= _CHUNK_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._holder.fed += len(self._pending)
            if self._recognizer.AcceptWaveform(bytes(self._pending)):
                self._collect(self._recognizer.Result())
            self._pending.clear()

    def _collect(self, result_json: str) -> None:
        for item in json.loads(result_json).get("result", []):
            if item["word"] != self._unknown:
                start, end = (self._timeline.session_time(t) for t in (item["start"], item["end"]))
                self._words.append(Word(item["word"], start, end, round(item["conf"], 3)))


def _seconds(pcm_bytes: int) -> float:
    return pcm_bytes / (SAMPLE_BYTES * PIPELINE_RATE)
