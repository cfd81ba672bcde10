"""Group files: `etc/shared/<group>/`, `merged.mg` built byte-identical to Wazuh's (reference section 15),
multi-groups under `var/multigroups/<hash>/`, and the agent's unmerge. Pure file logic: no sockets, no
database; the manager's rollout (`agentpulse.rollout`) and the agent use it.
"""
