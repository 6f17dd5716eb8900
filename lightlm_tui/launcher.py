"""The `lightlm-tui` command: no arguments opens the app; `monitor` and `compare` open it on run
folders; every other command is the engine's headless CLI. One parser (engine/cli/parser.py)
reads them all.

Kept free of torch / Textual imports until a command needs them, so `--help` answers at once.
"""

from __future__ import annotations

import sys

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lightlm-tui` console script: no command opens the app."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from lightlm_tui.app import run_app

        return run_app()
    from engine.cli.parser import APP_COMMANDS, build_parser

    if argv[0] not in APP_COMMANDS:
        from engine.cli import main as cli_main

        return cli_main(argv)
    args = build_parser().parse_args(argv)
    from engine import api
    from engine.errors import UserFacingError

    try:
        if args.command == "monitor":
            (run_dir,) = api.watch([args.run_dir])
        else:
            if len(args.run_dirs) < 2:
                raise UserFacingError("compare needs two or more run directories: "
                                      "lightlm-tui compare RUN_DIR RUN_DIR ...")
            run_dirs = api.watch(args.run_dirs)
    except UserFacingError as exc:
        sys.stderr.write(f"lightlm-tui: {exc}\n")
        return EXIT_BAD_INPUT
    from lightlm_tui.app import run_app

    return run_app(run_dir) if args.command == "monitor" else run_app(compare_dirs=run_dirs)


if __name__ == "__main__":
    sys.exit(main())
