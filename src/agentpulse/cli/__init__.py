"""Command-line tools: agentpulse, agent_control and manage_agents."""
