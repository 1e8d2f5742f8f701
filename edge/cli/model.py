"""`edge-agent model list | fetch | words`: the known models, the only command that touches the
network (fetch), and the installed model's vocabulary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.base import Command, config_of, log
from edge.errors import UsageError
from edge.progress import Meter


def _list(_args: argparse.Namespace) -> int:
    from edge.stt.catalog import KNOWN_MODELS  # only the model commands read the catalog

    for model in KNOWN_MODELS:
        print(f"{model.name:30} {model.language:14} {model.size / 1e6:6.1f} MB  sha256 {model.sha256}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from edge.stt.catalog import known_model
    from edge.stt.fetch import default_models_dir, fetch_model  # urllib: only when fetching

    if args.url:
        if args.name or not args.sha256:
            raise UsageError("model fetch --url URL needs --sha256 HEX and no NAME")
        url, sha256, name = args.url, args.sha256, None
    else:
        if not args.name or args.sha256:
            raise UsageError("model fetch needs a NAME from `edge-agent model list`, or --url URL --sha256 HEX")
        known = known_model(args.name)
        if known is None:
            raise UsageError(f"unknown model {args.name!r}; `edge-agent model list` shows the known ones, or use --url with --sha256")
        url, sha256, name = known.url, known.sha256, known.name
    dest = Path(args.dest) if args.dest else default_models_dir()
    log.info("fetching %s", url)
    fetched = fetch_model(url, sha256, dest, name, _ProgressBar())
    if fetched.already:
        print(f"{fetched.path} is installed already; nothing was downloaded")
    else:
        print(f"installed {fetched.path} (SHA-256 verified)")
    print(f'to use it, set [device] model = "{fetched.path}" in the household config')
    return 0


WORDS_SHOWN = 50
"""`model words` lists this many matches unless --limit says otherwise."""


def _words(args: argparse.Namespace) -> int:
    from edge.stt.model_path import find_model
    from edge.stt.vocabulary import read_word_table

    config = config_of(args)
    path = find_model(config.device.model, config.device.data_dir)
    table = read_word_table(path)
    matched = table.starting_with(args.prefix)
    shown = matched if args.limit == 0 else matched[: args.limit]
    for word in shown:
        print(word)
    summary = f"{len(matched)} of the model's {len(table.words):,} words start with {args.prefix!r}"
    if len(shown) < len(matched):
        summary += f"; the first {len(shown)} are listed (--limit 0 lists all)"
    print(f"{summary} (model: {path}; word list: {table.source.name})", file=sys.stderr)
    return 0


def _count(text: str) -> int:
    """--limit: a whole number, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of words (0 = no limit)")
    return int(text)


def _words_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prefix", metavar="PREFIX", help="list the words that start with this (case is ignored)")
    parser.add_argument(
        "--limit", type=_count, default=WORDS_SHOWN, metavar="N", help=f"list at most N words (default {WORDS_SHOWN}; 0 = all)"
    )


class _ProgressBar:
    """The download's meter (a line per 10% when not on a terminal, so logs stay readable);
    a server that sends no length gets a line every 10 MB instead."""

    def __init__(self) -> None:
        self._meter = Meter("downloading", "bytes", lines=True)
        self._shown = -1

    def __call__(self, done: int, total: int | None) -> None:
        if total:
            self._meter(done, total)
        elif done // (10 << 20) > self._shown:
            self._shown = done // (10 << 20)
            print(f"downloading: {done / 1e6:.1f} MB", file=sys.stderr, flush=True)


def _fetch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="a model from `edge-agent model list`")
    parser.add_argument("--url", help="download this archive (zip or tar) instead of a known model")
    parser.add_argument("--sha256", metavar="HEX", help="the archive's SHA-256 (required with --url)")
    parser.add_argument("--dest", metavar="DIR", help="install under this folder")


COMMANDS = (
    Command(
        "model",
        "list or download Vosk models (fetch: the only command that uses the network); search the model's words",
        "Known models are pinned to the SHA-256 of their archive: a download that does not match installs nothing. "
        "The agent itself never downloads. `model words` searches the vocabulary of the model the config names.",
        subcommands=(
            Command("list", "the known models, their size and pinned digest", "The models `model fetch NAME` knows.", _list),
            Command(
                "fetch",
                "download, verify and install a model",
                "Download a known model (by NAME) or any archive (--url with its --sha256), check the digest, unpack it "
                "safely and move it into place atomically. Default destination: /usr/share/vosk for root, "
                '~/.cache/vosk otherwise (both searched by model = "auto").',
                _fetch,
                _fetch_arguments,
            ),
            Command(
                "words",
                "list the words the model knows that start with PREFIX",
                "List the words of the [device] model's vocabulary that start with PREFIX (case ignored), sorted, "
                "and say how many matched (on stderr). The wake phrase and every grammar phrase must be made of "
                "these words: a word the model does not know is never heard, so run, serve and doctor refuse it.",
                _words,
                _words_arguments,
            ),
        ),
    ),
)
