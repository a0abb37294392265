"""`python -m wattserve` runs the command line."""

from wattserve.cli.app import main

main()
