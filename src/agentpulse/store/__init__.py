"""Storage: global.db and the per-agent databases (the wazuh-db role)."""
