"""The fleet simulator behind `agentpulse simulate`: thousands of Wazuh agents, one asyncio loop per process.

`runner.run` checks the `plan`, then runs one `fleet.FleetProcess` here or several in spawned processes
(`spawn`) and merges their `snapshot`s into the `report`. The danger is that the simulator measures itself
instead of the manager (see `fleet`). It builds on `agentpulse.agent`, `wire` and support modules only.
"""
