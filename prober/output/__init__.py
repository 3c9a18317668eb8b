"""Renderers: they read result objects only, never probes or sockets."""
