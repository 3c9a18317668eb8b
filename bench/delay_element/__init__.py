"""Benchmark of prober.lab.element: added delay error, reordering and seeded loss."""
