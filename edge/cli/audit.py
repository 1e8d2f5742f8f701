"""`edge-agent audit ...`: verify, checkpoint, export-key, show, report."""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import sys
from datetime import datetime, timezone
from itertools import takewhile
from pathlib import Path

from edge import wiring
from edge.audit import merkle, transparency
from edge.audit.log import EVENT_TYPES
from edge.audit.note import parse_tree_head
from edge.cli.base import Command, config_of, log
from edge.config import Config
from edge.disk.outputs import check_output, write_output
from edge.errors import AuditError, EdgeError, UsageError
from edge.instants import parse_instant
from edge.progress import Meter
from edge.store.details import readable
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
    for cosigned in result.cosigned:
        print(f"cosigned by witness {cosigned}")
    print(f"shredded: {result.shredded} bucket(s), {result.shredded_on_time} on time, worst lateness {result.worst_late_seconds:.1f} s")
    if result.details_forgotten:
        print(
            f"forgotten: the details of {result.details_forgotten} session(s) (when, how long) were forgotten with their data; "
            "what verification needs stays in clear"
        )
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
    if args.format == "c2sp":
        check_output(out, data_dir)
        signed = wiring.open_audit(config).tree_checkpoint()
        write_output(out, signed.encode(), data_dir)
        head = parse_tree_head(signed.text)
        print(f"C2SP checkpoint of {head.size} entries ({head.origin}) written to {out}")
        return 0
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
    if args.format == "note":
        vkey = wiring.open_audit(config).verifier_key()
        if args.out is None:
            print(vkey)
            return 0
        check_output(Path(args.out), config.device.data_dir)
        write_output(Path(args.out), (vkey + "\n").encode(), config.device.data_dir)
        print(f"note verifier key written to {args.out}")
        return 0
    if args.out is None:
        raise UsageError("--out FILE.pem is required with --format pem (only --format note prints to standard output)")
    check_output(Path(args.out), config.device.data_dir)
    write_output(Path(args.out), wiring.open_audit(config).public_key_pem(), config.device.data_dir)
    print(f"public key written to {args.out}")
    return 0


def _prove(args: argparse.Namespace) -> int:
    """An RFC 6962 proof over the log's lines, one base64 hash a line (nearest the leaf first),
    as C2SP tools print and take them; nothing else on stdout."""
    config = config_of(args)
    leaves = transparency.leaves_of(config.device.data_dir)
    if not leaves:
        raise UsageError(f"{config.device.data_dir / 'audit.jsonl'}: the audit log is missing or empty; there is nothing to prove")
    size = len(leaves) if args.size is None else args.size
    if not 1 <= size <= len(leaves):
        raise UsageError(f"--size {size}: the log's tree has 1 to {len(leaves)} entries (its lines)")
    if args.inclusion is not None:
        if not 1 <= args.inclusion <= size:
            raise UsageError(f"--inclusion {args.inclusion}: not an entry of the tree of {size} (its entries are lines 1 to {size})")
        proof = merkle.inclusion_proof(leaves, args.inclusion - 1, size)
    else:
        if not 0 <= args.consistency <= size:
            raise UsageError(f"--consistency {args.consistency}: an older tree has 0 to {size} entries (the tree proven to)")
        proof = merkle.consistency_proof(leaves, args.consistency, size)
    for digest in proof:
        print(base64.b64encode(digest).decode())
    return 0


def _prove_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--inclusion", type=int, metavar="SEQ", help="prove that line SEQ is entry SEQ of the tree")
    which.add_argument("--consistency", type=int, metavar="OLD_SIZE", help="prove that the tree of OLD_SIZE entries is a prefix")
    parser.add_argument("--size", type=int, metavar="N", help="the tree proven in: its first N lines (default: every line)")


def _witness_push(args: argparse.Namespace) -> int:
    config = config_of(args)
    from edge.audit.witness import push  # only this command speaks HTTP

    if args.out:
        check_output(Path(args.out), config.device.data_dir)
    pushed = push(wiring.open_audit(config), args.url, args.key)
    if args.out:
        write_output(Path(args.out), pushed.cosigned.encode(), config.device.data_dir)
    event = pushed.event
    when = datetime.fromtimestamp(event.time, timezone.utc).isoformat()
    print(f"the witness {event.witness} cosigned the log's tree of {event.size} entries at {when} (kept in the log: witness.cosigned)")
    if args.out:
        print(f"the cosigned checkpoint is in {args.out}")
    return 0


def _witness_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="the witness's submission prefix (POST URL/add-checkpoint)")
    parser.add_argument("--key", required=True, metavar="VKEY", help="the witness's cosigning key: NAME+KEYID+BASE64 (type 0x04)")
    parser.add_argument("--out", metavar="FILE", help="also write the checkpoint with its cosignature here")


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
    keys: dict[str, str] | None = None  # read at the first sealed entry: older logs have none
    unread = False
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
            if "sealed" in entry["fields"] and keys is None and not unread:
                try:
                    keys = wiring.held_details_keys(config)
                except EdgeError as exc:  # their details are unknown here, not forgotten
                    log.warning("sealed details are shown as sealed: %s", exc)
                    unread = True
            fields = " ".join(
                f"{k}={v}"
                for k, v in sorted(readable(entry["type"], entry["fields"], keys).items())
                if k not in ("signature", "public_key")
            )
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
    parser.add_argument(
        "--since",
        metavar="ISO8601",
        help="only events at or after this instant (a session's lines say only the hour they were written in)",
    )
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


def _checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE")
    parser.add_argument(
        "--format", choices=("v1", "c2sp"), default="v1", help="v1: edge's text and FILE.sig (default); c2sp: a C2SP signed note"
    )


def _export_key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="where to write it (required for pem; note prints it without)")
    parser.add_argument("--format", choices=("pem", "note"), default="pem", help="pem: for openssl (default); note: a C2SP vkey")


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--witness", metavar="FILE", help="a checkpoint saved earlier: edge's (FILE, and FILE.sig if present) or a C2SP one"
    )
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
                "or replaced. --format c2sp writes instead a C2SP tlog checkpoint (origin, size, RFC 6962 root of "
                "the log's lines) as a signed note, one file, that golang.org/x/mod/sumdb/note and C2SP witnesses read.",
                _checkpoint,
                _checkpoint_arguments,
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
                "Then: openssl pkeyutl -verify -pubin -inkey FILE.pem -rawin -in CHECKPOINT -sigfile CHECKPOINT.sig. "
                "--format note prints (or writes to --out) the C2SP note verifier key of --format c2sp checkpoints: "
                "NAME+KEYID+BASE64, as note.NewVerifier takes it.",
                _export_key,
                _export_key_arguments,
            ),
            Command(
                "prove",
                "print an RFC 6962 inclusion or consistency proof over the log's lines",
                "Read-only. The log's lines are the leaves of an RFC 6962 Merkle tree (leaf: SHA-256 of 0x00 and the "
                "line without its newline), whose root a --format c2sp checkpoint signs. Prints the proof's hashes, "
                "base64, one a line, as C2SP tlog tools use them: --inclusion SEQ (line SEQ, leaf index SEQ-1) or "
                "--consistency OLD_SIZE, in the tree of --size N lines (default: all of them).",
                _prove,
                _prove_arguments,
            ),
            Command(
                "witness",
                "have a C2SP witness cosign the log's tree",
                "A witness (anything that speaks C2SP tlog-witness: a household server, a phone, a fleet service) "
                "keeps the last checkpoint of this log it cosigned and cosigns a new one only if the log grew from it.",
                subcommands=(
                    Command(
                        "push",
                        "send the latest checkpoint with its consistency proof; keep the cosignature in the log",
                        "Run by a person (the agent stays offline): signs a C2SP checkpoint of the log, POSTs it to "
                        "URL/add-checkpoint with a consistency proof from the size this witness last cosigned, checks the "
                        "cosignature it returns with --key and appends it to the log (witness.cosigned), where `audit "
                        "verify` checks it. A witness that refuses because the log is not consistent with what it saw "
                        "(HTTP 422) is evidence the log was rewritten: exit 1.",
                        _witness_push,
                        _witness_push_arguments,
                    ),
                ),
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
