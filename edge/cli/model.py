"""`edge-agent model list | fetch`: the only commands that touch the network."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.cli.base import Command, log
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
        "list or download Vosk models (the only commands that use the network)",
        "Known models are pinned to the SHA-256 of their archive: a download that does not match installs nothing. "
        "The agent itself never downloads.",
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
        ),
    ),
)
