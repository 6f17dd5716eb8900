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
    if argv[0] == "monitor":
        return _monitor(argv[1:])
    if argv[0] == "compare":
        return _compare(argv[1:])
    from engine.cli import main as cli_main

    return cli_main(argv)


def _monitor(argv: list[str]) -> int:
    """`lightlm-tui monitor RUN_DIR`: the Monitor on any run directory (live or finished)."""
    from pathlib import Path

    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: lightlm-tui monitor RUN_DIR\n")
        return 2
    run_dir = Path(argv[0])
    if not (run_dir / "events.jsonl").is_file():
        sys.stderr.write(f"lightlm-tui: {run_dir} has no events.jsonl; is it a run directory?\n")
        return 2
    from lightlm_tui.app import run_app

    return run_app(run_dir)


def _compare(argv: list[str]) -> int:
    """`lightlm-tui compare RUN_DIR RUN_DIR ...`: two or more runs overlaid (live ones follow)."""
    from pathlib import Path

    if len(argv) < 2 or any(a.startswith("-") for a in argv):
        sys.stderr.write("usage: lightlm-tui compare RUN_DIR RUN_DIR [RUN_DIR ...]\n")
        return 2
    run_dirs = [Path(a) for a in argv]
    for run_dir in run_dirs:
        if not (run_dir / "events.jsonl").is_file():
            sys.stderr.write(f"lightlm-tui: {run_dir} has no events.jsonl; is it a run directory?\n")
            return 2
    from lightlm_tui.app import run_app

    return run_app(compare_dirs=run_dirs)


if __name__ == "__main__":
    sys.exit(main())
