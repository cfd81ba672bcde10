"""`python -m agentpulse` is the `agentpulse` command."""

import sys

from agentpulse.cli.main import main

sys.exit(main())
