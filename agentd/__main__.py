"""`python -m agentd`."""

from agentd.daemon import main

raise SystemExit(main())
