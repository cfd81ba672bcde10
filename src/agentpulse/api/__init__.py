"""The HTTP API (Wazuh's server API subset, reference section 16), the fleet page and the `/metrics` route."""
