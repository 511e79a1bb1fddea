"""`python -m nas ...`: the `nas` command."""

from nas.cli import main

main()
