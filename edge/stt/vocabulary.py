"""The words a Vosk model can output, and the check that the trigger uses only those.

A word the model lacks is never heard: in free dictation the spotter never sees the
wake phrase (no session ever starts), and in a grammar Vosk drops it with a log line.
So the wake phrase and every grammar phrase are checked before any audio is heard,
and the error names the key the user wrote, the word, the model, and how to search
its vocabulary (`edge-agent model words PREFIX`).

Two sources answer "does the model know this word": the loaded model itself
(`edge.stt.recognizer.Vocabulary`, free: the agent has loaded it anyway), and the
word table read from the model's files (`read_word_table`, for `doctor` and `model
words`, which do not load the model). The table is where Vosk takes it from, in
Vosk's order: the output symbols of graph/HCLG.fst, else of graph/Gr.fst, else
graph/words.txt (files in the model's own folder for old layouts without am/).
Reading PyPI's Korean model's table (503,352 symbols inside its 48 MB Gr.fst) takes ~0.3 s
of CPU; the agent never reads it (it asks the loaded model, ~15 us).
"""

from __future__ import annotations

import functools
import mmap
import re
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge.config import Config
from edge.errors import ConfigError, ModelError
from edge.invocation import program
from edge.values import TriggerMode


def search_command() -> str:
    """The command that lists the model's words, as it can be typed here."""
    return f"{program()} model words"


"""The command that lists the words a model knows."""
_NOT_WORDS = re.compile(r"^(?:#.*|!SIL|<[^<>]*>|\[[a-z_]+\])$")
"""Symbols of a Kaldi word table that are never output as words: <eps>, <s>, </s>, the
unknown-word and noise tokens (<UNK>, [unk], [noise], <SPOKEN_NOISE>), silence, disambiguation
(#0). Other bracketed symbols are words (the Korean model's "[일]", "[09]")."""

_SPECIAL_FIRST = frozenset("#!<[")
"""How every symbol _NOT_WORDS matches begins (most symbols need no regular expression)."""

_FST_MAGIC = 2125659606
_SYMBOLS_MAGIC = 2125658996
_HAS_INPUT_SYMBOLS, _HAS_OUTPUT_SYMBOLS = 0x1, 0x2
_INT32, _INT64 = struct.Struct("<i"), struct.Struct("<q")


class KnownWords(Protocol):
    """Anything that says which of some words a model does not know."""

    def missing(self, words: Sequence[str]) -> list[str]: ...


def is_word(symbol: str) -> bool:
    """False for the word table's special symbols, which Vosk never outputs as words."""
    return _NOT_WORDS.match(symbol) is None


# -- the check -------------------------------------------------------------------------------


WAKE_PHRASE, GRAMMAR = "trigger.wake_phrase", "trigger.grammar"
"""The config keys the check names (as `ConfigError.setting`)."""


@dataclass(frozen=True)
class Unheard:
    """Words of one setting that the model cannot output."""

    setting: str
    """The config key (WAKE_PHRASE, GRAMMAR), or the command-line option ("--grammar")."""
    shown: str
    """The setting as the user wrote it: "[trigger] wake_phrase = '...'", "[trigger] grammar"."""
    words: dict[str, str | None]
    """Each word, and the spelling of it the model knows (another case, composed Hangul), if any."""
    phrases: list[str]
    """The phrases that hold them."""


def unheard(setting: str, shown: str, phrases: Sequence[str], known: KnownWords) -> Unheard | None:
    """The words of `phrases` that `known` lacks or that are no words at all (None: none)."""
    words = list(dict.fromkeys(w for phrase in phrases for w in phrase.split()))
    lacking = set(known.missing([w for w in words if is_word(w)])) | {w for w in words if not is_word(w)}
    if not lacking:
        return None
    missing = {w: _spelled_otherwise(w, known) for w in words if w in lacking}
    return Unheard(setting, shown, missing, [p for p in phrases if lacking & set(p.split())])


def _spelled_otherwise(word: str, known: KnownWords) -> str | None:
    """The model's spelling of `word` when it differs only in case or Unicode composition
    (models write English in capitals; some keyboards give decomposed Hangul)."""
    composed = unicodedata.normalize("NFC", word)
    others = [w for w in dict.fromkeys((composed, composed.upper(), composed.lower(), composed.capitalize())) if w != word]
    found = [w for w in others if is_word(w)]
    lacking = set(known.missing(found))
    return next((w for w in found if w not in lacking), None)


def trigger_phrases(config: Config) -> list[tuple[str, str, tuple[str, ...]]]:
    """What the trigger asks the model to hear: (key, the key as written, phrases). The wake
    phrase only in wake mode: the other modes never listen for it. The spoken commands too:
    a command the model cannot output is never heard."""
    trigger = config.trigger
    found: list[tuple[str, str, tuple[str, ...]]] = []
    if trigger.mode == TriggerMode.WAKE:
        found.append((WAKE_PHRASE, f"[trigger] wake_phrase = {trigger.wake_phrase!r}", (trigger.wake_phrase,)))
    if trigger.grammar:
        found.append((GRAMMAR, "[trigger] grammar", trigger.grammar))
    for key, phrase in config.voice_commands.phrases().items():
        found.append((f"voice_commands.{key}", f"[voice_commands] {key} = {phrase!r}", (phrase,)))
    return found


def check_trigger_words(config: Config, known: KnownWords, model_dir: Path) -> None:
    """Refuse a wake phrase or grammar phrase with a word the model cannot output, in free
    dictation and in grammar mode alike (run, serve and doctor call this before audio)."""
    problems = [found for key, shown, phrases in trigger_phrases(config) if (found := unheard(key, shown, phrases, known))]
    if problems:
        raise ConfigError(f"{config.path}: {describe(problems, model_dir)}", path=config.path, setting=problems[0].setting)


def _aside(word: str, other: str | None) -> str:
    if not is_word(word):
        return " (a symbol of the model, never output as a word)"
    if other is None:
        return ""
    if other == unicodedata.normalize("NFC", word):
        return " (written as decomposed Unicode: it knows the same letters composed, one character a syllable)"
    return f" (it knows {other!r})"


def describe(problems: Sequence[Unheard], model_dir: Path) -> str:
    """One paragraph: each setting and its unknown words, the model, and how to search it."""
    parts = []
    for problem in problems:
        words = ", ".join(repr(w) + _aside(w, other) for w, other in problem.words.items())
        plural = "s" if len(problem.words) > 1 else ""
        if problem.setting == WAKE_PHRASE:
            effect = "so it would never hear the wake phrase and no session would ever start"
        else:
            effect = f"so it would never output {', '.join(repr(p) for p in problem.phrases)}"
        parts.append(f"{problem.shown}: the model does not know the word{plural} {words}, {effect}")
    first = unicodedata.normalize("NFC", next(iter(problems[0].words)))
    prefix = (first if is_word(first) else first.strip("<>[]#!"))[:2]
    return (
        "; ".join(parts) + f". The model is {model_dir}; `{search_command()} {prefix}` lists the words it knows that start "
        f"with {prefix!r}: use words from its vocabulary."
    )


# -- the word table in the model's files ------------------------------------------------------


@dataclass(frozen=True)
class WordTable:
    """Every word a model can output, as read from its files."""

    source: Path
    """The file the table was read from."""
    symbols: tuple[str, ...]
    """The table as stored: words and special symbols, in the file's order."""

    @functools.cached_property
    def words(self) -> tuple[str, ...]:
        """The words, without the special symbols."""
        return tuple(s for s in self.symbols if s[:1] not in _SPECIAL_FIRST or is_word(s))

    @functools.cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(self.symbols)

    def missing(self, words: Sequence[str]) -> list[str]:
        return [w for w in words if w not in self._known]

    def starting_with(self, prefix: str) -> list[str]:
        """The words that start with `prefix`, ignoring case (and Unicode composition), sorted."""
        wanted = unicodedata.normalize("NFC", prefix).casefold()
        return sorted(w for w in self.words if w.casefold().startswith(wanted))


def read_word_table(model_dir: Path) -> WordTable:
    """The model's word table, from where Vosk reads it; read once per process."""
    return _read_word_table(model_dir.resolve())


@functools.lru_cache(maxsize=4)
def _read_word_table(model_dir: Path) -> WordTable:
    folder = model_dir / "graph" if (model_dir / "am" / "final.mdl").is_file() else model_dir
    for name in ("HCLG.fst", "Gr.fst"):
        path = folder / name
        if path.is_file():  # Vosk reads HCLG.fst alone when it exists
            symbols = _fst_output_symbols(path)
            if symbols is not None:
                return WordTable(path, symbols)
            break
    words_txt = folder / "words.txt"
    if words_txt.is_file():
        try:
            lines = words_txt.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{words_txt}: the model's word list cannot be read ({exc})", path=words_txt) from None
        return WordTable(words_txt, tuple(line.split()[0] for line in lines if line.strip()))
    raise ModelError(
        f"the model at {model_dir} has no word list edge can read (the output symbols of {folder}/HCLG.fst or "
        f"{folder}/Gr.fst, or {folder}/words.txt), so its vocabulary cannot be listed or checked",
        path=model_dir,
    )


def _fst_output_symbols(path: Path) -> tuple[str, ...] | None:
    """The output symbol table in an OpenFst binary file's header (None: it has none).
    Header: magic, type, arc type, version, flags, properties, start, states, arcs; then the
    input and output symbol tables, each: magic, name, next key, size, (symbol, key) pairs."""
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if _INT32.unpack_from(data, 0)[0] != _FST_MAGIC:
                return None
            position = _skip_string(data, _skip_string(data, 4))
            flags = _INT32.unpack_from(data, position + 4)[0]
            position += 8 + 32
            if not flags & _HAS_OUTPUT_SYMBOLS:
                return None
            if flags & _HAS_INPUT_SYMBOLS:
                start = position
                inputs, position = _symbol_table(data, position)
                length = position - start
                if data[position : position + length] == data[start:position]:  # an acceptor's two tables are one
                    return inputs
            return _symbol_table(data, position)[0]
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None


def _skip_string(data: mmap.mmap, position: int) -> int:
    length: int = _INT32.unpack_from(data, position)[0]
    return position + 4 + length


def _symbol_table(data: mmap.mmap, position: int) -> tuple[tuple[str, ...], int]:
    if _INT32.unpack_from(data, position)[0] != _SYMBOLS_MAGIC:
        raise ValueError("not a symbol table")
    position = _skip_string(data, position + 4) + 8  # its name, then the next free key
    size = _INT64.unpack_from(data, position)[0]
    position += 8
    unpack = _INT32.unpack_from
    symbols: list[bytes] = []
    for _ in range(size):
        length = unpack(data, position)[0]
        position += 4
        symbols.append(data[position : position + length])
        position += length + 8  # the symbol, then its key
    if not symbols:
        return (), position
    return tuple(b"\n".join(symbols).decode().split("\n")), position  # one decode: symbols hold no whitespace
