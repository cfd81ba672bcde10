"""`ossec.conf` parsed once into frozen dataclasses: the manager's configuration and the parts others reuse.

`xmltree` turns the text into elements that know their line (defusedxml: no DTD, no entity expansion),
`convert` checks values, `sections` reads a section through a field table, and `manager` holds the
manager's sections. The agent's `<client>` lives beside the agent (`agentpulse.agent.config`) and reads
the same file with these parts; this package never imports the agent.
"""

from agentpulse.config.agent_events import AgentEventsConfig
from agentpulse.config.auth import AuthConfig, ForceOptions
from agentpulse.config.convert import parse_time
from agentpulse.config.manager import (
    DEFAULT_CONFIG_TEXT,
    Config,
    DatabaseConfig,
    GlobalConfig,
    ManagerKeepalive,
    NatsConfig,
    RemoteConfig,
    default_config_text,
    load_config,
    parse_config,
)
from agentpulse.config.xmltree import ConfigError

__all__ = [
    "DEFAULT_CONFIG_TEXT",
    "AgentEventsConfig",
    "AuthConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "ForceOptions",
    "GlobalConfig",
    "ManagerKeepalive",
    "NatsConfig",
    "RemoteConfig",
    "default_config_text",
    "load_config",
    "parse_config",
    "parse_time",
]
