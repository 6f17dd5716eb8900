"""The `lightlm-tui` command: no arguments opens the app; subcommands go to the engine's CLI.

Kept tiny and free of torch / Textual imports so `lightlm-tui --help` answers at once.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lightlm-tui` console script: no command opens the app."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from lightlm_tui.app import run_app

        return run_app()
    from engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
