"""The `wattserve` command line: one module per verb, wired together in app.py."""
