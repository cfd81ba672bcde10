"""The Wazuh 4.x secure-message codec, without I/O: bytes and values in, bytes and values out."""
