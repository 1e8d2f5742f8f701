"""The long kill -9 campaign: random crash points while recording and while shredding, and
monotonic jumps (a purge whose monotonic clock is faked decades ahead),
until N faults were injected; after each, restart, purge and check the promises
(tests/campaign.py says which). The quick version runs in CI (tests/test_faults.py).

    .venv/bin/python scripts/fault-campaign.py [--faults 200] [--seed N]

About 10 s per trial on a 2-core machine. Exit 1 if any trial broke a promise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from edge.crypto import keyring  # noqa: E402

from campaign import Campaign, make_clip  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=int, default=200, help="stop after this many injected crashes (default 200)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed (printed, to replay a run)")
    args = parser.parse_args()
    keyring.join_new_session_keyring()  # root keys of this run die with it, never in the user's keyrings
    print(f"fault campaign: seed {args.seed}, until {args.faults} faults", flush=True)
    with tempfile.TemporaryDirectory(prefix="edge-faults-") as scratch:
        folder = Path(scratch)
        campaign = Campaign(folder, make_clip(folder), args.seed)
        started = time.monotonic()
        while campaign.tally.faults < args.faults:
            before = len(campaign.tally.failures)
            campaign.trial()
            for failure in campaign.tally.failures[before:]:
                print(f"FAILED {failure}", flush=True)
            if campaign.tally.trials % 10 == 0:
                minutes = (time.monotonic() - started) / 60
                print(f"  {campaign.tally.summary()} ({minutes:.1f} min)", flush=True)
        print(f"fault campaign: {campaign.tally.summary()}")
        return 1 if campaign.tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
