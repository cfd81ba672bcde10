"""The Python agent that speaks the Wazuh 4.x protocol (the fleet simulator, `agentpulse.simulator`, builds on it)."""
