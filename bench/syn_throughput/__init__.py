"""Benchmark: how many SYN probes per second prober sends and reads, against hping3 and nping."""
