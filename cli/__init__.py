"""The command line: ``python -m cli predict`` classifies files offline with the served model (no server)."""
