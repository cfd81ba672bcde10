"""remoted: the asyncio server agents connect to, their sessions and the manager keep-alive."""
