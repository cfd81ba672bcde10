"""Several agentpulse nodes: node leases, the leader election, the operator's view of the cluster, and the
local PostgreSQL and NATS cluster the tests and `make cluster-demo` run."""
