"""The sans-IO core: packet templates and parsing, reply cookies, one state machine per probe.

Nothing here opens a socket, touches asyncio or reads a clock: time and packets are arguments.
"""
