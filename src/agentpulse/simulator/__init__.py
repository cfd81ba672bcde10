"""The fleet simulator behind `agentpulse simulate`: thousands of Wazuh agents, one asyncio loop per process.

`plan` checks the request and places each agent (process, source address, cipher, role); `keys` loads
or creates the fleet's client.keys; `fleet.FleetProcess` runs one process's agents (`agents`) and their
connections (`connections`) from a `wheel.TimingWheel`; `spawn` spreads the fleet over spawned processes
that report `snapshot.Snapshot`s through a pipe; `runner.run` ties it together; `report` writes the
progress line and the JSON summary. The danger is that the simulator measures itself instead of the
manager: no task, timer or log line per agent on the hot path, latencies in a fixed-size histogram
(`histogram`), `--precompute` seals each keep-alive once per connection, connection attempts in flight are
capped, and every wait has a deadline. It builds on `agentpulse.agent` and `wire` only.
"""
