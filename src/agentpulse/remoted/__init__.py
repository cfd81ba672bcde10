"""remoted: the asyncio server agents connect to (Wazuh's remoted: secure and control messages).

`server.Remoted` dispatches messages; `session` frames TCP connections; `bindings` knows which connection
carries which agent; `keystore` holds client.keys and each agent's cipher and counters; `grace` and
`scheduler` decide when an agent is disconnected; `worker_process`, `worker_pool` and `pipe` run it all
in several processes.
"""
