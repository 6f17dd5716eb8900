"""The one parser of `lightlm-tui`: every command, with a line of help each.

`monitor` and `compare` open the app; the launcher (lightlm_tui/launcher.py) runs those two,
and engine.cli.commands the rest, all parsed here so `lightlm-tui --help` lists them all and
`lightlm-tui COMMAND --help` works for each.
"""

from __future__ import annotations

import argparse

from engine.api import EXPORT_FORMATS
from engine.runs.control_channel import REQUESTS
from engine.use.gguf_export import GGUF_TYPES

DETACH_HELP = ("run in the background and return at once (output to RUN_DIR/engine.log; "
               "watch with `lightlm-tui monitor RUN_DIR`, control with `lightlm-tui control`)")
APP_COMMANDS = ("monitor", "compare")  # the ones that open the app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightlm-tui",
        description="Train a small Llama-style language model. With no command, opens the app.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("presets", help="list the preset configs")

    check = commands.add_parser("check", help="check this machine: Python, torch, GPU, bf16, RAM, disk")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument("--runs-dir", default="runs", help="where runs will be written (for the disk check)")

    inspect = commands.add_parser("inspect", help="check a config and show its size, FLOPs and training memory")
    add_config_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--toml", action="store_true", help="print the resolved config as TOML")

    plan = commands.add_parser("plan", help="size a model for a time budget on this machine")
    add_config_arguments(plan)
    plan.add_argument("--budget", metavar="TIME", required=True, help="45s, 5m, 1.5h, 1h30m (a bare number: hours)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--out", metavar="FILE", help="write the planned config as TOML")

    train = commands.add_parser("train", help="train a model headless (Ctrl-C stops with a checkpoint)")
    add_config_arguments(train)
    train.add_argument("--name", help="run name (the folder under runs_dir)")
    train.add_argument("--runs-dir", help="folder that holds run directories (train.runs_dir)")
    train.add_argument("--run-dir", metavar="DIR",
                       help="train into this new or empty folder instead of a fresh one under runs_dir")
    train.add_argument("--detach", action="store_true", help=DETACH_HELP)
    train.add_argument("--init-from", metavar="RUN_DIR",
                       help="fine-tune: start from this run's latest checkpoint (or a checkpoint folder) and its "
                            "tokenizer; with --set lora.enabled=true only low-rank adapters train")
    train.add_argument("--budget", metavar="TIME",
                       help="plan the model for this much wall time (45s, 5m, 1.5h) and stop on time")
    add_launch_arguments(train)

    resume = commands.add_parser("resume", help="continue a run from its latest checkpoint")
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument("--detach", action="store_true", help=DETACH_HELP)
    resume.add_argument("--from", dest="from_checkpoint", metavar="NAME",
                        help="continue from this checkpoint folder (e.g. step_000500) instead of the latest")
    add_launch_arguments(resume)

    control = commands.add_parser(
        "control", help="pause, resume, save, eval or stop a run that is training in another process")
    control.add_argument("run_dir", metavar="RUN_DIR")
    control.add_argument("request", choices=REQUESTS)

    monitor = commands.add_parser("monitor", help="open the app's Monitor on a run directory (live or finished)")
    monitor.add_argument("run_dir", metavar="RUN_DIR")
    compare = commands.add_parser("compare", help="open the app on two or more runs' curves overlaid")
    compare.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")

    evaluate = commands.add_parser("eval", help="evaluate a run's latest checkpoint on held-out text")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")

    generate = commands.add_parser("generate", help="sample text from a run's latest checkpoint")
    generate.add_argument("run_dir", metavar="RUN_DIR")
    generate.add_argument("--prompt", default="", help="text to continue (empty: start a new document)")
    generate.add_argument("--max-new-tokens", type=int, default=200)
    generate.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    generate.add_argument("--top-k", type=int, default=50, help="0 = off")
    generate.add_argument("--top-p", type=float, default=0.95, help="1 = off")
    generate.add_argument("--seed", type=int, default=None)

    export = commands.add_parser(
        "export", help="write a Hugging Face folder AutoModelForCausalLM loads, or a GGUF file llama.cpp runs")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="hf",
                        help="hf: a transformers folder (default); gguf: one file for llama.cpp / Ollama")
    export.add_argument("--gguf-type", choices=GGUF_TYPES, default="f32",
                        help="with --format gguf: how the weight matrices are stored (default f32)")
    export.add_argument("--out", metavar="PATH",
                        help="target folder for hf (default RUN_DIR/export/hf), file for gguf "
                             "(default RUN_DIR/export/gguf/RUN-TYPE.gguf)")
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--preset / --config / --set, shared by every command that takes a config."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", metavar="NAME", help="start from a preset (see `presets`)")
    source.add_argument("--config", metavar="FILE", help="start from a TOML run config")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set train.learning_rate=3e-4 (repeatable)",
    )


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """--nproc and friends: train as several processes under torchrun (DDP)."""
    group = parser.add_argument_group("several processes (DDP under torchrun)")
    group.add_argument("--nproc", type=int, default=None, metavar="N",
                       help="processes on this machine (one per GPU; on a CPU they share its cores); "
                            "default train.processes")
    group.add_argument("--nnodes", type=int, default=1, metavar="M", help="machines taking part")
    group.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's index, 0 to M-1")
    group.add_argument("--rdzv-endpoint", default="", metavar="HOST:PORT",
                       help="node 0's address, the same on every machine (with --nnodes > 1)")
