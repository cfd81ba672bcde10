"""Agent events on their way out: the event record and its JSON, the on-disk spool, the JetStream
publisher and the analysisd datagram sink. A low package (beside `records`): remoted and its worker
processes use it, and it imports only `wire`, `status` and support modules, never remoted or events.
"""
