"""The Python agent that speaks the Wazuh 4.x protocol, and the fleet simulator built on it."""
