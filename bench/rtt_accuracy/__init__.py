"""bench/rtt_accuracy: reported SYN RTT vs the RTT on the wire, for prober and other tools."""
