"""The e2e fixtures (a real manager, agent processes) for the attack tests."""

from tests.e2e.conftest import agent_process

__all__ = ["agent_process"]
