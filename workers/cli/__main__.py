"""`python -m workers.cli ...` runs the `lipdub` command."""

from workers.cli import main

main()
