"""bench/monitor_scale: Prober.monitor at scale (see bench/README.md)."""
