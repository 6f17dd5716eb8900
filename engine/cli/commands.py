"""The headless commands: each reads its arguments, calls one engine.api job, and renders what
comes back.

`main(argv)` returns an exit code. Every bad input ends with one sentence on stderr and a
non-zero code, never a traceback. This package and the UI are the only places that write to
the terminal; the rest of the engine reports through return values, errors and events.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import TextIO

from engine import api
from engine.cli.parser import APP_COMMANDS, build_parser
from engine.config import ConfigError, RunConfig, dumps_config, list_presets, save_config
from engine.errors import UserFacingError
from engine.launch.torchrun import Launch
from engine.runs.events import Event, LogLine

EXIT_BAD_INPUT = 2


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _config_of(args: argparse.Namespace) -> RunConfig:
    return api.resolve_config(args.preset, args.config, args.overrides)


def _launch_of(args: argparse.Namespace) -> Launch:
    return Launch(args.nproc, args.nnodes, args.node_rank, args.rdzv_endpoint)


def _process_start() -> float:
    """When this process started: a budget counts from there (imports and planning included)."""
    import psutil

    return psutil.Process().create_time()


def cmd_presets(args: argparse.Namespace, out: TextIO) -> int:
    for preset in list_presets():
        out.write(f"{preset.name:<8} {preset.description}\n")
    return 0


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from engine.machine.hardware import FAIL

    report = api.check(args.runs_dir)
    if args.json:
        out.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        for check in report.checks:
            out.write(f"  {check.status:<4}  {check.name:<22} {check.sentence}\n")
    return 1 if report.worst == FAIL else 0


def cmd_inspect(args: argparse.Namespace, out: TextIO) -> int:
    config = _config_of(args)
    summary = api.inspect(config)
    memory = summary.memory
    if args.json:
        out.write(json.dumps({
            "name": config.name, "parameters": summary.parameters,
            "trainable_parameters": summary.trainable_parameters, "active_parameters": summary.active_parameters,
            "flops_per_token": summary.flops_per_token, "tokens_per_step": summary.tokens_per_step,
            "memory_bytes": {**dataclasses.asdict(memory), "total": memory.total}, "problems": summary.problems,
        }, indent=2) + "\n")
    elif args.toml:
        out.write(dumps_config(config))
    else:
        out.write(_inspect_text(summary))
    return EXIT_BAD_INPUT if summary.problems else 0


def _inspect_text(summary: api.ConfigSummary) -> str:
    config, memory = summary.config, summary.memory
    m, t, lora = config.model, config.train, config.lora
    precision = "fp32" if t.use_dtype == "float32" else "16-bit autocast"
    moe = (f" total, {summary.active_parameters:,} active per token ({m.moe_active_experts} of "
           f"{m.moe_num_experts} experts + {m.moe_shared_experts} shared)" if m.use_moe else "")
    adapters = (f", {summary.adapter_parameters:,} trainable (LoRA rank {lora.rank})"
                if summary.adapter_parameters else "")
    text = (
        f"{config.name or '(unnamed)'}: {m.num_layers} layers x {m.num_dims} dims, "
        f"{m.num_heads} heads ({m.num_kv_heads} kv), ffn {m.ffn_hidden_dims}, "
        f"vocab {m.vocab_size}, context {m.context_len}\n"
        f"  parameters        {summary.parameters:,}{moe}{adapters}\n"
        f"  FLOPs per token   {summary.flops_per_token:,} (training, seq {t.max_seq_len})\n"
        f"  tokens per step   {t.tokens_per_step:,} ({t.batch_size} x {t.max_seq_len} x "
        f"{t.accumulation_steps} accumulation)\n"
        f"  training memory   {_mib(memory.total)} ({precision}; weights {_mib(memory.weights)}, "
        f"grads {_mib(memory.gradients)}, optimizer {_mib(memory.optimizer)}, activations "
        f"{_mib(memory.activations)}, loss {_mib(memory.loss_buffers)})\n"
    )
    if summary.problems:
        return text + f"  {len(summary.problems)} problem(s):\n" + "".join(f"  - {p}\n" for p in summary.problems)
    return text + "  config ok\n"


def _write_plan(plan, out: TextIO) -> None:
    from engine.planner.plan import summary_lines

    out.write("\n".join(summary_lines(plan)) + "\n")
    out.write("".join(f"  - {reason}\n" for reason in plan.reasons))
    out.write("".join(f"warning: {warning}\n" for warning in plan.warnings))


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    # Only planning: the budget starts with the run that uses the plan.
    plan = api.plan(args.budget, _config_of(args), overrides=args.overrides)
    if args.json:
        out.write(json.dumps(plan.to_dict(), indent=2) + "\n")
    else:
        _write_plan(plan, out)
    if args.out:
        save_config(plan.config, Path(args.out), header=f"Planned by `lightlm-tui plan --budget {args.budget}`.")
        if not args.json:
            out.write(f"wrote {args.out}; train it on time with `lightlm-tui train --config {args.out}`\n")
    return 0


def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    config = _config_of(args)
    if api.is_torchrun_rank():  # the launcher resolved everything; this rank trains what it was given
        return _foreground(lambda on_event, control: api.start_run(
            config, run_dir=args.run_dir, on_event=on_event, control=control,
            budget_started_at=_process_start() if config.train.time_budget_s else None), out)
    if args.init_from and args.budget:
        raise UserFacingError("--budget sizes a new model, and a fine-tune keeps its base's shape; give the "
                              "fine-tune a time limit with --set train.time_budget_s=SECONDS instead")
    if args.init_from:
        config = api.fine_tune(config, args.init_from, args.overrides)
    if args.name:
        config = dataclasses.replace(config, name=args.name)
    if args.runs_dir:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, runs_dir=args.runs_dir))
    launch = _launch_of(args).for_config(config.train.processes)
    warning = api.memory_warning(api.validated(config))
    if warning:
        out.write(f"warning: {warning}\n")
    # Training here: the budget counts from this process's start, planning included. A run that
    # starts elsewhere (detached, or torchrun's ranks) gets its budget from its own start.
    trains_here = not args.detach and launch.world_size == 1
    if args.budget:
        plan = api.plan(args.budget, config, overrides=args.overrides, name=args.name or "",
                        started_at=_process_start() if trains_here else None, trains_here=trains_here)
        _write_plan(plan, out)
        config = plan.config
    started_at = _process_start() if config.train.time_budget_s else None
    return _foreground(lambda on_event, control: api.start_run(
        config, run_dir=args.run_dir, launch=launch, detach=args.detach, on_event=on_event, control=control,
        budget_started_at=started_at), out)


def cmd_resume(args: argparse.Namespace, out: TextIO) -> int:
    # What a budget has left counts from this process's start.
    return _foreground(lambda on_event, control: api.resume_run(
        args.run_dir, from_checkpoint=args.from_checkpoint, launch=_launch_of(args), detach=args.detach,
        on_event=on_event, control=control, budget_started_at=_process_start()), out)


def _foreground(start, out: TextIO) -> int:
    """Run `start(on_event, control)` with progress printed and Ctrl-C turned into a stop
    request (a second Ctrl-C aborts); returns the exit code."""
    from engine.cli.progress import ProgressPrinter
    from engine.train.decision import TrainControl

    printer, control = ProgressPrinter(out), TrainControl()

    def on_interrupt(signum, frame) -> None:
        if control.stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        printer(LogLine("warning", "stopping after this step and saving a checkpoint (Ctrl-C again to abort)"))
        control.stop.set()

    def on_event(event: Event) -> None:
        printer(event)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        started = start(on_event, control)
    finally:
        signal.signal(signal.SIGINT, previous)
    if started.pid is not None:
        run_dir = started.run_dir
        out.write(f"training in the background (pid {started.pid}) in {run_dir}\n"
                  f"  watch:   lightlm-tui monitor {run_dir}\n"
                  f"  control: lightlm-tui control {run_dir} pause|resume|save|eval|stop\n"
                  f"  log:     {started.log}\n")
    return 0 if started.ok else started.exit_code or 1


def cmd_control(args: argparse.Namespace, out: TextIO) -> int:
    run_dir = api.control_run(args.run_dir, args.request)
    out.write(f"{args.request} requested; the run applies it after its current step (see {run_dir / 'events.jsonl'})\n")
    return 0


def cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    result = api.evaluate(args.run_dir)
    figures = result.figures
    if args.json:
        out.write(json.dumps({"run_dir": str(result.run_dir), "step": result.step,
                              **dataclasses.asdict(figures)}) + "\n")
    else:
        out.write(f"{result.run_dir} at step {result.step}: val loss {figures.val_loss:.4f} | val bpb "
                  f"{figures.val_bpb:.4f} | perplexity {figures.perplexity:.2f}\n")
    return 0


def cmd_generate(args: argparse.Namespace, out: TextIO) -> int:
    from engine.use.generate import SamplingSettings

    settings = SamplingSettings(args.max_new_tokens, args.temperature, args.top_k or None,
                                args.top_p if args.top_p < 1 else None, args.seed)
    printed = 0

    def stream(text: str) -> None:  # print only what is new; decoding can revise a partial byte
        nonlocal printed
        if text.startswith(text[:printed]) and len(text) > printed:
            out.write(text[printed:])
            out.flush()
            printed = len(text)

    out.write(args.prompt)
    text = api.generate(args.run_dir, args.prompt, settings, on_text=stream)
    out.write(text[printed:] + "\n")
    return 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    done = api.export(args.run_dir, args.format, args.out, args.gguf_type)
    if done.format == "gguf":
        out.write(f"exported to {done.path} ({args.gguf_type}; run with `llama-completion -m {done.path}` "
                  "or an Ollama Modelfile `FROM` line)\n")
    elif done.adapters is not None:
        out.write(f"exported the merged model (adapters folded in, float32) to {done.path} (load with "
                  f"AutoModelForCausalLM.from_pretrained)\n"
                  f"exported the adapters to {done.adapters} (peft) and their base model to {done.adapters_base}: "
                  f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(done.adapters_base)!r}), "
                  f"{str(done.adapters)!r})\n")
    else:
        out.write(f"exported to {done.path} (load with AutoModelForCausalLM.from_pretrained)\n")
    return 0


COMMANDS = {
    "presets": cmd_presets, "check": cmd_check, "inspect": cmd_inspect, "plan": cmd_plan, "train": cmd_train,
    "resume": cmd_resume, "control": cmd_control, "eval": cmd_eval, "generate": cmd_generate, "export": cmd_export,
}


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one headless command; returns the process exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in APP_COMMANDS:
        err.write(f"lightlm-tui: `{args.command}` opens the app; run it as `lightlm-tui {args.command} ...`\n")
        return EXIT_BAD_INPUT
    if args.command not in COMMANDS:
        parser.print_help(out)
        return 0
    try:
        return COMMANDS[args.command](args, out)
    except (ConfigError, UserFacingError) as exc:  # one sentence, no traceback
        err.write(f"lightlm-tui: {exc}\n")
    return EXIT_BAD_INPUT
