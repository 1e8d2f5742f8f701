"""`edge-agent audit ...`: verify, checkpoint, export-key, show, report."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from datetime import datetime
from itertools import takewhile
from pathlib import Path

from edge import wiring
from edge.audit.log import EVENT_TYPES
from edge.cli.base import Command, config_of, log
from edge.config import Config
from edge.disk.outputs import check_output, write_output
from edge.errors import AuditError, EdgeError, UsageError
from edge.instants import parse_instant
from edge.progress import Meter
from edge.store.keystore import Access
from edge.written.notice import Notice


def _verify(args: argparse.Namespace) -> int:
    config = config_of(args)
    certificate = _read_certificate(Path(args.certificate)) if args.certificate else None
    result = wiring.verification(config, args.witness, progress=Meter("checking the audit log", "bytes"))
    problems = None if certificate is None else _certificate_problems(config, certificate, result.ok)
    if args.json:
        out = result.to_json()
        if problems is not None:
            out["certificate"] = {"ok": not problems, "problems": problems}
        print(json.dumps(out))
        return 0 if result.ok and not problems else 1
    if not result.ok:
        print(f"audit verify FAILED: {result.problems[0]}")
        for problem in result.problems[1:]:
            print(f"  also: {problem}")
        for difference in problems or ():
            print(f"certificate {args.certificate} FAILED: {difference}")
        return 1
    if problems:
        print(f"certificate {args.certificate} FAILED: {problems[0]}")
        for difference in problems[1:4]:
            print(f"  also: {difference}")
        if len(problems) > 4:
            print(f"  and {len(problems) - 4} more difference(s)")
        return 1
    print(f"audit log intact: {result.entries} entries, {result.checkpoints} signed checkpoint(s)")
    if result.recovered:
        print(f"recovered: {result.recovered} write(s) cut off by a crash or power cut (see `audit show --type log.recovered`)")
    if result.signed_late:
        print(
            f"signed late: {result.signed_late} line(s) were left unsigned by a writer that was killed (or a power cut) and "
            "signed by a later command; nothing proves none was removed before that (see `audit show --type log.unsigned`)"
        )
    if result.unsigned:
        print(
            f"in progress: the last {result.unsigned} line(s) belong to a session or command still running; "
            "they are signed when it ends (until then they are not protected)"
        )
    if result.witness:
        print(f"witness: {result.witness}")
    print(f"shredded: {result.shredded} bucket(s), {result.shredded_on_time} on time, worst lateness {result.worst_late_seconds:.1f} s")
    print(f"live: {result.live_sessions} session(s)" + (f", next expiry {result.next_expiry}" if result.next_expiry else ""))
    print("nothing past its retention can be opened with any key this device holds")
    if problems is not None:
        print(f"certificate {args.certificate}: valid: signed with this log's key, and every claim agrees with the lines it names")
    return 0


def _certificate(args: argparse.Namespace) -> int:
    from edge.audit import certificate

    config = config_of(args)
    data_dir = config.device.data_dir
    out = Path(args.out)
    signature_out = out.with_name(out.name + ".sig")
    check_output(out, data_dir)
    check_output(signature_out, data_dir)
    since = parse_instant(args.since, "--since")
    scope = certificate.Scope(request=args.request, session=args.session, since=since)
    result = wiring.verification(config, progress=Meter("checking the audit log", "bytes"))
    if not result.ok:
        raise AuditError(
            f"the audit log does not verify ({result.problems[0]}): no certificate is issued; `edge-agent audit verify` explains"
        )
    audit = wiring.open_audit(config)
    issued = wiring.trusted_now(config).isoformat()
    levels = wiring.guarantee_levels()
    try:
        bound = certificate.build(audit.entries(), scope, issued, levels)["checkpoint"]["line"]
        # derived from the lines up to its checkpoint only, exactly as `verify --certificate` derives it again
        body = certificate.build(takewhile(lambda entry: entry["seq"] <= bound, audit.entries()), scope, issued, levels)
    except certificate.CertificateError as exc:
        raise AuditError(f"no certificate: {exc}") from None
    document = certificate.encode(body)
    signature = audit.sign_document(document)
    write_output(out, document, data_dir)
    write_output(signature_out, signature, data_dir)
    totals = body["totals"]
    print(
        f"certificate of {totals['deletions']} deletion(s) ({totals['sessions']} session(s), {totals['audio']} recording(s), "
        f"{totals['transcripts']} transcript(s), {totals['buckets']} bucket(s), {totals['voiceprints']} voiceprint(s)), "
        f"anchored to the checkpoint at line {body['checkpoint']['line']}, written to {out} and {out.name}.sig"
    )
    for pending in body.get("pending", ()):
        print(f"still kept: its {pending['kind']}, until {pending['expires']}")
    return 0


def _read_certificate(path: Path) -> tuple[bytes, bytes]:
    signature_path = path.with_name(path.name + ".sig")
    try:
        return path.read_bytes(), signature_path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{exc.filename}: cannot read the certificate: {exc.strerror} (it needs FILE and FILE.sig)", path=path) from None


def _certificate_problems(config: Config, certificate_files: tuple[bytes, bytes], log_ok: bool) -> list[str]:
    """Why the certificate does not hold against this device's log (empty: it holds)."""
    from edge.audit import certificate

    document, signature = certificate_files
    problems = certificate.check(document, signature, wiring.open_audit(config).entries(), wiring.guarantee_levels())
    if not log_ok:
        problems.insert(0, "the audit log does not verify, so nothing it says can certify a deletion (see above)")
    return problems


def _checkpoint(args: argparse.Namespace) -> int:
    config = config_of(args)
    data_dir = config.device.data_dir
    out = Path(args.out)
    signature_out = out.with_name(out.name + ".sig")
    check_output(out, data_dir)
    check_output(signature_out, data_dir)
    checkpoint = wiring.open_audit(config).checkpoint()
    write_output(out, checkpoint.text, data_dir)
    write_output(signature_out, checkpoint.signature, data_dir)
    print(f"checkpoint of {checkpoint.entries} entries written to {out} and {out.name}.sig")
    return 0


def _export_key(args: argparse.Namespace) -> int:
    config = config_of(args)
    check_output(Path(args.out), config.device.data_dir)
    write_output(Path(args.out), wiring.open_audit(config).public_key_pem(), config.device.data_dir)
    print(f"public key written to {args.out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    types = set(args.type or ())
    for name in args.type or ():
        if name not in EVENT_TYPES:
            close = difflib.get_close_matches(name, EVENT_TYPES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"--type {name!r} is not an event type{hint}; the types are: {', '.join(sorted(EVENT_TYPES))}")
    config = config_of(args)
    since = parse_instant(args.since, "--since")
    undated = 0
    for entry in wiring.open_audit(config).entries():
        if types and entry["type"] not in types:
            continue
        if since:
            try:
                if datetime.fromisoformat(entry["wall"]) < since:
                    continue
            except (ValueError, TypeError):  # a chain-valid line anyone could have written
                undated += 1
                continue
        if args.json:
            print(json.dumps(entry, sort_keys=True))
        else:
            fields = " ".join(f"{k}={v}" for k, v in sorted(entry["fields"].items()) if k not in ("signature", "public_key"))
            print(f"{entry['seq']:>6}  {entry['wall']}  {entry['type']:<18} {fields}")
    if undated:
        log.warning("%d event(s) left out: their time is not a date (run `edge-agent audit verify`)", undated)
    return 0


def _report(args: argparse.Namespace) -> int:
    """The page into a file, or with `--html -` onto stdout (nothing else is written there:
    `ssh speaker sudo edge-agent audit report --html - > report.html` gives the parent a
    file of their own, where a file written on the speaker would be root's, 0600)."""
    to_stdout = args.html == "-"
    if to_stdout and sys.stdout.isatty():
        raise UsageError(
            "--html - writes the page to standard output, which is this terminal: send it to a file, e.g. "
            "`edge-agent audit report --html - > report.html` (over ssh: `ssh SPEAKER sudo edge-agent audit report --html - "
            "> report.html`), or name the file: --html report.html"
        )
    config = config_of(args)
    from edge.audit.report import render

    if not to_stdout:
        check_output(Path(args.html), config.device.data_dir)
    result = wiring.verification(config)
    level = wiring.open_vault(config.vault, config.device.data_dir).level
    now = wiring.trusted_now(config)
    page = render(list(wiring.open_audit(config).entries()), config, level, result, now, _notices(config, now))
    said = "" if result.ok else " (the audit log did NOT verify: see the page)"
    if to_stdout:
        sys.stdout.buffer.write(page.encode("utf-8"))
        log.info("report written to standard output%s", said)
    else:
        write_output(Path(args.html), page.encode("utf-8"), config.device.data_dir)
        print(f"report written to {args.html}{said}")
    return 0


def _notices(config: Config, now: datetime) -> list[Notice]:
    """The profiles near their inactivity purge, for the report (none when the keystore
    cannot be read here: the page still says what the log holds)."""
    from edge.retention.inactivity import notices

    try:
        store, _audit = wiring.open_store(config, Access.READ)
        return notices(config, store.read(), now)
    except EdgeError as exc:
        log.warning("the report lists no coming inactivity purge: %s", exc)
        return []


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="ISO8601", help="only events at or after this instant")
    parser.add_argument(
        "--type", metavar="TYPE", action="append", help="only events of this type (e.g. shred, session.created); repeat for several"
    )
    parser.add_argument("--json", action="store_true", help="one JSON event per line, as stored")


def _certificate_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--request", metavar="ID", help="a forget request (`audit show --type forget.requested` lists them)")
    which.add_argument("--session", metavar="ID", help="a session whose data was shredded or forgotten")
    which.add_argument("--since", metavar="ISO8601", help="every deletion done at or after this instant")
    parser.add_argument("--out", required=True, metavar="FILE", help="the certificate (0600); its signature goes to FILE.sig")


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--witness", metavar="FILE", help="a checkpoint saved earlier (FILE, and FILE.sig if present)")
    parser.add_argument("--certificate", metavar="FILE", help="also check a deletion certificate (FILE and FILE.sig) against this log")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


COMMANDS = (
    Command(
        "audit",
        "check, show and export the tamper-evident audit log",
        "The audit log records every session, export, shred and forget, hash-chained and signed. "
        "It never holds audio, transcript text or keys.",
        subcommands=(
            Command(
                "verify",
                "prove the log is intact and that nothing past its retention can still be opened",
                "Read-only. Checks the hash chain, every signed checkpoint and where checkpoints stand, then "
                "cross-checks the data folder: every session past its expiry has a shred logged and opens with no "
                "key the device holds; every forget request was fulfilled; no child session was exported for "
                "training. On failure exits 1 and names the first bad line. --certificate FILE also checks a deletion "
                "certificate against the log: its signature, the lines it names, its checkpoint, and every claim.",
                _verify,
                _verify_arguments,
            ),
            Command(
                "checkpoint",
                "sign the log's current head; write the text to FILE and the signature to FILE.sig",
                "Writes a checkpoint (log id, entries, head hash) and its raw 64-byte Ed25519 signature. Keep it "
                "somewhere else (e.g. a phone): `audit verify --witness FILE` then detects a log that was cut short "
                "or replaced.",
                _checkpoint,
                lambda parser: parser.add_argument("--out", required=True, metavar="FILE"),
            ),
            Command(
                "certificate",
                "write a signed deletion certificate (FILE, and its signature FILE.sig) for a forget, a session or a period",
                "States what was asked (by a command, by voice or by the retention schedule), what was destroyed (sessions, "
                "recordings, transcripts, buckets, voiceprints), when, how (crypto-erase and root ratchet), where the root "
                "key lives and the guarantee level, and the audit-log lines and checkpoint it rests on. Derived from the "
                "audit log alone, which must verify. Check it with `edge-agent audit verify --certificate FILE`, or its "
                "signature with openssl like a checkpoint's (docs/FORMATS.md section 6b).",
                _certificate,
                _certificate_arguments,
            ),
            Command(
                "export-key",
                "write the log's public key (PEM) for checking checkpoints with openssl",
                "Then: openssl pkeyutl -verify -pubin -inkey FILE.pem -rawin -in CHECKPOINT -sigfile CHECKPOINT.sig",
                _export_key,
                lambda parser: parser.add_argument("--out", required=True, metavar="FILE.pem"),
            ),
            Command("show", "list the log's events", "List audit events, oldest first.", _show, _show_arguments),
            Command(
                "report",
                "write a self-contained HTML page for parents",
                "One HTML file with no external scripts, fonts or images: what each profile keeps and until when, "
                "a timeline of sessions kept and shredded, lateness, forget requests, the guarantee level. "
                "--html - writes it to standard output (never a terminal), e.g. from a headless speaker: "
                "ssh SPEAKER sudo edge-agent audit report --html - > report.html",
                _report,
                lambda parser: parser.add_argument(
                    "--html", required=True, metavar="FILE", help="the page to write (0600); - for standard output"
                ),
            ),
        ),
    ),
)
