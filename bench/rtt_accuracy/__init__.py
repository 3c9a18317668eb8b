"""bench/rtt_accuracy: each tool's SYN send and receive instants and its RTT against tcpdump's
stamps on both ends of a veth, for prober, hping3, nping and Scapy."""
