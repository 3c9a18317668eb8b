"""``python -m prober``: the same as the ``prober`` command."""

from prober.cli import main

main()
