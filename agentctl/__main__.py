"""`python -m agentctl`."""

from agentctl.cli import main

raise SystemExit(main())
