"""Headless command line: the same engine as the app, no UI.

`main(argv)` returns an exit code. Every bad input ends with one sentence on stderr and a
non-zero code, never a traceback. This module and the UI are the only places that write to
the terminal; the rest of the engine reports through return values, errors and events.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from engine.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    dumps_config,
    list_presets,
    load_config,
    load_preset,
    validate,
)
from engine.estimates import flops_per_token, parameter_count, training_memory

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightlm-tui",
        description="Train a small Llama-style language model. With no command, opens the app.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("presets", help="list the preset configs")
    inspect = commands.add_parser(
        "inspect", help="check a config and show its size, FLOPs and training memory"
    )
    add_config_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--toml", action="store_true", help="print the resolved config as TOML")
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


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The config named by --preset/--config (defaults when neither), with --set applied."""
    if args.config:
        config = load_config(args.config)
    elif args.preset:
        config = load_preset(args.preset)
    else:
        config = RunConfig()
    return apply_overrides(config, args.overrides)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def cmd_presets(out: TextIO) -> int:
    for preset in list_presets():
        out.write(f"{preset.name:<8} {preset.description}\n")
    return 0


def cmd_inspect(args: argparse.Namespace, out: TextIO) -> int:
    config = resolve_config(args)
    problems = validate(config)
    m, t = config.model, config.train
    memory = training_memory(m, t)
    summary = {
        "name": config.name,
        "parameters": parameter_count(m),
        "flops_per_token": flops_per_token(m, t.max_seq_len),
        "tokens_per_step": t.tokens_per_step,
        "memory_bytes": {
            "weights": memory.weights, "gradients": memory.gradients, "optimizer": memory.optimizer,
            "activations": memory.activations, "loss_buffers": memory.loss_buffers, "total": memory.total,
        },
        "problems": [str(p) for p in problems],
    }
    if args.json:
        out.write(json.dumps(summary, indent=2) + "\n")
    elif args.toml:
        out.write(dumps_config(config))
    else:
        precision = "fp32" if t.use_dtype == "float32" else "16-bit autocast"
        out.write(
            f"{config.name or '(unnamed)'}: {m.num_layers} layers x {m.num_dims} dims, "
            f"{m.num_heads} heads ({m.num_kv_heads} kv), ffn {m.ffn_hidden_dims}, "
            f"vocab {m.vocab_size}, context {m.context_len}\n"
            f"  parameters        {summary['parameters']:,}\n"
            f"  FLOPs per token   {summary['flops_per_token']:,} (training, seq {t.max_seq_len})\n"
            f"  tokens per step   {t.tokens_per_step:,} ({t.batch_size} x {t.max_seq_len} x "
            f"{t.accumulation_steps} accumulation)\n"
            f"  training memory   {_mib(memory.total)} ({precision}; weights {_mib(memory.weights)}, "
            f"grads {_mib(memory.gradients)}, AdamW {_mib(memory.optimizer)}, activations "
            f"{_mib(memory.activations)}, loss {_mib(memory.loss_buffers)})\n"
        )
        if problems:
            out.write(f"  {len(problems)} problem(s):\n" + "".join(f"  - {p}\n" for p in problems))
        else:
            out.write("  config ok\n")
    return EXIT_BAD_INPUT if problems else 0


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one headless command; returns the process exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "presets":
            return cmd_presets(out)
        if args.command == "inspect":
            return cmd_inspect(args, out)
    except ConfigError as exc:
        err.write(f"lightlm-tui: {exc}\n")
        return EXIT_BAD_INPUT
    parser.print_help(out)
    return 0
