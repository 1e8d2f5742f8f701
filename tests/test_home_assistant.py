"""edge against a real, unmodified Home Assistant (scripts/ha-check.sh): PyPI's newest
homeassistant in a Debian root whose Python it accepts, driven by scripts only through its
HTTP and websocket APIs, with edge behind the TCP bridge install.sh sets up.

The first run on a machine builds the root (debootstrap and pip: about 10 minutes, cached in
/var/tmp/edge-ha-root); later runs take 1-2 minutes. Needs root, as CI runs.
"""

from __future__ import annotations

import subprocess

import pytest

from support import ROOT

STT_RUNS = 14
"""Utterances whose text Home Assistant must report: 5 + 3, then 2 after edge's restart, 2 after its own
and 2 through the entries its zeroconf discovery added."""


@pytest.mark.timeout(3600)
def test_an_unmodified_home_assistant_transcribes_through_edge_and_edge_keeps_its_promises():
    ran = subprocess.run([str(ROOT / "scripts" / "ha-check.sh")], capture_output=True, text=True, timeout=3500, cwd=ROOT)
    lines = ran.stdout.splitlines()
    report = ran.stdout + ran.stderr[-6000:]
    assert ran.returncode == 0, report
    assert [line for line in lines if line.startswith("FAIL")] == [], report
    passed = [line.removeprefix("PASS  ") for line in lines if line.startswith("PASS  ")]
    assert sum(1 for line in passed if "Home Assistant's stt-end text is" in line) == STT_RUNS, report
    for phase in (
        "onboarding over HTTP: the owner user is created and a token issued",
        "an utterance of silence: Home Assistant reports no text recognised (stt-no-text-recognized)",
        "edge restarted while Home Assistant ran: Home Assistant recovered without user action",
        "Home Assistant restarted: the next pipeline runs work",
        "each utterance is a session in `edge-agent status`, tagged by its listener's profile",
        "`edge-agent audit verify` passes",
        "no transcript text in edge's stdout or stderr",
        "Home Assistant's zeroconf runs on the check's private link only (edge-mdns, 192.0.2.1)",
    ):
        assert phase in passed, report
    # discovery: install.sh's Avahi record for each listener, found by Home Assistant's zeroconf
    for listener, record in (("edge (kids' room)", "edge speech-to-text (port "), ("edge (hall)", "edge speech-to-text (port ")):
        found = f"{listener}: Home Assistant discovers install.sh's Avahi record '{record}"
        assert any(line.startswith(found) and "starts the Wyoming flow (source zeroconf)" in line for line in passed), report
        added = f"{listener}: confirming the discovered flow adds an entry for 192.0.2.1:"
        assert any(line.startswith(added) for line in passed), report
        assert f"{listener} (discovered): Home Assistant loads the entry and makes one speech-to-text entity" in passed, report
