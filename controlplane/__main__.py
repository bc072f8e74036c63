"""`python -m controlplane` is the `countycloud` command."""

from controlplane.cli import main

main()
