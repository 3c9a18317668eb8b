"""The asyncio shell around the sans-IO core: raw sockets, kernel timestamps, timers, dispatch."""
