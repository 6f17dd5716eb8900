"""The headless command line: one parser for every command (parser.py), the commands that call
engine.api and render its results (commands.py), and the progress printer (progress.py).

`main(argv)` returns an exit code. Torch-free at import, so `--help` answers at once.
"""

from engine.cli.commands import main

__all__ = ["main"]
