"""`python -m agentpulse` is the `agentpulse` command.

The manager also starts its remoted worker processes this way (`python -m agentpulse worker ...`).
"""

import sys

from agentpulse.cli.main import main

sys.exit(main())
