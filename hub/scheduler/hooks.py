"""The message handlers that start timed checks (registered on import)."""
