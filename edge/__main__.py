"""`python -m edge` is the same as the `edge-agent` command."""

from edge.cli import main

raise SystemExit(main())
