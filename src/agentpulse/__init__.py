"""agentpulse: the agent connection and keep-alive manager, wire-compatible with Wazuh 4.x."""

__version__ = "0.1.0"
