"""bench/scan_rate: SYN/s sent, completeness, CPU and peak RSS of `prober scan` beside masscan,
zmap, nmap and a Scapy sr() loop, against the built-in lab's `many` peer."""
