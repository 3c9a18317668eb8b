"""bench/startup: the CPU one `prober syn -c 1` costs, beside nping's and hping3's."""
