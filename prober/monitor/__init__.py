"""Monitoring: ``Prober.monitor``'s loop (and, to come, the Prometheus exporter)."""
