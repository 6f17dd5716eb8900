"""Headless command line: the same engine as the app, no UI.

`main(argv)` returns an exit code. Every bad input ends with one sentence on stderr and a
non-zero code, never a traceback. This module and the UI are the only places that write to
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

from engine.runs.control_channel import REQUESTS, send_request
from engine.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    dumps_config,
    list_presets,
    load_config,
    load_preset,
    save_config,
    validate,
)
from engine.model.estimates import active_parameter_count, flops_per_token, parameter_count, training_memory
from engine.errors import UserFacingError
from engine.gguf_export import GGUF_TYPES
from engine.runs.events import LogLine

EXIT_BAD_INPUT = 2
EXPORT_FORMATS = ("hf", "gguf")
DETACH_HELP = ("run in the background and return at once (output to RUN_DIR/engine.log; "
               "watch with `lightlm-tui monitor RUN_DIR`, control with `lightlm-tui control`)")


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
    inspect = commands.add_parser(
        "inspect", help="check a config and show its size, FLOPs and training memory"
    )
    add_config_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.add_argument("--toml", action="store_true", help="print the resolved config as TOML")

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

    plan = commands.add_parser("plan", help="size a model for a time budget on this machine")
    add_config_arguments(plan)
    plan.add_argument("--budget", metavar="TIME", required=True, help="45s, 5m, 1.5h, 1h30m (a bare number: hours)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument("--out", metavar="FILE", help="write the planned config as TOML")

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


def _launch(args: argparse.Namespace, config: RunConfig):
    """The torchrun launch --nproc (else train.processes) asks for, or None for one process
    (or when this process already is a rank)."""
    from engine.launch import Launch

    nproc = args.nproc if args.nproc is not None else config.train.processes
    launch = Launch(nproc, args.nnodes, args.node_rank, args.rdzv_endpoint)
    if _under_torchrun() or launch.world_size == 1:
        return None
    problems = launch.problems()
    if problems:
        raise UserFacingError("; ".join(problems))
    return launch


def _under_torchrun() -> bool:
    import os

    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


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
    m, t, lora = config.model, config.train, config.lora
    memory = training_memory(m, t, lora=lora)
    from engine.config.finetune import lora_parameter_count

    adapters = lora_parameter_count(m, lora.target_modules, lora.rank) if lora.enabled else 0
    summary = {
        "name": config.name,
        "parameters": parameter_count(m) + adapters,
        "trainable_parameters": adapters or parameter_count(m),  # a LoRA run trains its adapters alone
        "active_parameters": active_parameter_count(m) + adapters,  # per token; less than parameters for MoE
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
            f"  parameters        {summary['parameters']:,}"
            + (f" total, {summary['active_parameters']:,} active per token ({m.moe_active_experts} of "
               f"{m.moe_num_experts} experts + {m.moe_shared_experts} shared)" if m.use_moe else "")
            + (f", {adapters:,} trainable (LoRA rank {lora.rank})" if adapters else "") + "\n"
            f"  FLOPs per token   {summary['flops_per_token']:,} (training, seq {t.max_seq_len})\n"
            f"  tokens per step   {t.tokens_per_step:,} ({t.batch_size} x {t.max_seq_len} x "
            f"{t.accumulation_steps} accumulation)\n"
            f"  training memory   {_mib(memory.total)} ({precision}; weights {_mib(memory.weights)}, "
            f"grads {_mib(memory.gradients)}, optimizer {_mib(memory.optimizer)}, activations "
            f"{_mib(memory.activations)}, loss {_mib(memory.loss_buffers)})\n"
        )
        if problems:
            out.write(f"  {len(problems)} problem(s):\n" + "".join(f"  - {p}\n" for p in problems))
        else:
            out.write("  config ok\n")
    return EXIT_BAD_INPUT if problems else 0


def _train(config: RunConfig, run_dir: Path, resume: bool, out: TextIO, budget_started_at: float | None = None) -> int:
    from engine.runs.events import Event
    from engine.progress import ProgressPrinter
    from engine.runs.run_dir import EventLog
    from engine.train.trainer import Trainer, TrainControl

    from engine.runs.events import EngineError
    from engine.train.distributed import from_environment

    main_rank = from_environment().is_main
    # Under DDP rank 0 writes the run dir and prints progress; the others say only their errors.
    log, printer, control = EventLog(run_dir) if main_rank else None, ProgressPrinter(out), TrainControl()

    def emit(event: Event) -> None:
        if log is not None:
            log.write(event)
            printer(event)
        elif isinstance(event, EngineError):
            printer(event)

    def on_interrupt(signum, frame) -> None:
        if control.stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        printer(LogLine("warning", "stopping after this step and saving a checkpoint (Ctrl-C again to abort)"))
        control.stop.set()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        finished = Trainer(config, run_dir, emit, control, resume=resume, budget_started_at=budget_started_at).run()
    finally:
        signal.signal(signal.SIGINT, previous)
        if log is not None:
            log.close()
    return 0 if finished.status in ("completed", "stopped") else 1


def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from engine.runs.run_dir import new_run_dir

    config = resolve_config(args)
    if args.init_from and args.budget:
        raise UserFacingError("--budget sizes a new model, and a fine-tune keeps its base's shape; give the "
                              "fine-tune a time limit with --set train.time_budget_s=SECONDS instead")
    if args.init_from and not _under_torchrun():
        config = _fine_tune_config(config, args)
    if args.name:
        config = dataclasses.replace(config, name=args.name)
    if args.runs_dir:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, runs_dir=args.runs_dir))
    if args.nproc is not None and not _under_torchrun():  # what the run uses is what its config says
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, processes=args.nproc))
    problems = validate(config, cuda_available=_cuda_available())
    if problems:
        raise ConfigError(problems)
    if not _under_torchrun():
        _warn_about_memory(config, out)
    launch = _launch(args, config)
    if _under_torchrun():  # a rank started by torchrun: the launcher chose the config and run dir
        from engine.launch import budget_start_from_environment

        if not args.run_dir:
            raise UserFacingError("under torchrun, give every rank the same --run-dir")
        started_at = budget_start_from_environment() or (_process_start() if config.train.time_budget_s else None)
        return _train(config, Path(args.run_dir), resume=False, out=out, budget_started_at=started_at)
    if args.budget:
        config = _planned(config, args, out, trains_here=launch is None).config
    started_at = _process_start() if config.train.time_budget_s else None
    run_dir = _empty_run_dir(args.run_dir) if args.run_dir else new_run_dir(config.train.runs_dir, config.name)
    if launch is not None:
        config_path = run_dir / "config.toml"
        save_config(config, config_path, header="The full resolved config this run used.")
        return _run_launch(launch, ["train", "--config", str(config_path), "--run-dir", str(run_dir)], run_dir,
                           started_at, args.detach, out)
    if args.detach:
        config_path = run_dir / "config.toml"
        save_config(config, config_path, header="The full resolved config this run used.")
        return _detach(["train", "--config", str(config_path), "--run-dir", str(run_dir)], run_dir, out)
    return _train(config, run_dir, resume=False, out=out, budget_started_at=started_at)


def _fine_tune_config(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """--init-from: the base's model shape and tokenizer under the preset / config file, then the
    --set values again (so a --set that contradicts the base is refused by the trainer, by name)."""
    from engine.train.init_from import finetune_config, resolve_base

    base = resolve_base(args.init_from)
    return apply_overrides(finetune_config(config, base), args.overrides)


def _warn_about_memory(config: RunConfig, out: TextIO) -> None:
    """Before any time is spent: the memory estimate against what is free on the device."""
    import psutil

    from engine.model.estimates import memory_shortfall

    if _cuda_available():
        import torch

        free, _ = torch.cuda.mem_get_info()
        shortfall = memory_shortfall(config.model, config.train, free, "GPU memory", "cuda", lora=config.lora)
    else:
        shortfall = memory_shortfall(config.model, config.train, psutil.virtual_memory().available,
                                     lora=config.lora)
    if shortfall:
        out.write(f"warning: {shortfall}\n")


def _process_start() -> float:
    """When this process started: a budget counts from there (imports and planning included)."""
    import psutil

    return psutil.Process().create_time()


def _planned(base: RunConfig, args: argparse.Namespace, out: TextIO, quiet: bool = False, trains_here: bool = True):
    """Plan `base` for --budget; the user's --set values still win over the plan's choices."""
    from engine.budget import parse_budget
    from engine.planner.plan import plan_for_this_machine, summary_lines

    # Training here: the budget counts from this process's start, planning included. Only
    # planning (`plan`, or a run that starts elsewhere): the budget starts with that run.
    trains_here = trains_here and not getattr(args, "detach", False)
    plan = plan_for_this_machine(parse_budget(args.budget), base,
                                 started_at=_process_start() if trains_here else None, trains_here=trains_here)
    if args.overrides:
        plan = dataclasses.replace(plan, config=apply_overrides(plan.config, args.overrides))
    if getattr(args, "name", None):  # train --name: the run is named as asked, not "plan-5m"
        plan = dataclasses.replace(plan, config=dataclasses.replace(plan.config, name=args.name))
    if not quiet:
        out.write("\n".join(summary_lines(plan)) + "\n")
        out.write("".join(f"  - {reason}\n" for reason in plan.reasons))
        out.write("".join(f"warning: {warning}\n" for warning in plan.warnings))
    return plan


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    base = resolve_config(args)
    plan = _planned(base, args, out, quiet=args.json, trains_here=False)
    if args.json:
        out.write(json.dumps(plan.to_dict(), indent=2) + "\n")
    if args.out:
        save_config(plan.config, Path(args.out), header=f"Planned by `lightlm-tui plan --budget {args.budget}`.")
        if not args.json:
            out.write(f"wrote {args.out}; train it on time with `lightlm-tui train --config {args.out}`\n")
    return 0


def _empty_run_dir(path: str) -> Path:
    """--run-dir: a folder to train into, refused if a run already lives there."""
    run_dir = Path(path).expanduser()
    if any((run_dir / name).exists() for name in ("events.jsonl", "checkpoints")):
        raise UserFacingError(f"{run_dir} already holds a run; continue it with `lightlm-tui resume {run_dir}` "
                              "or pick a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _run_launch(launch, rank_args: list[str], run_dir: Path, started_at: float | None, detach: bool,
                out: TextIO) -> int:
    """Train as `launch.world_size` processes under torchrun, here or in the background."""
    from engine.launch import run_under_torchrun, torchrun_command

    out.write(f"training as {launch.nproc} process(es) on this machine, {launch.world_size} in all (DDP) in "
              f"{run_dir}\n")
    if detach:
        return _detach(torchrun_command(launch, rank_args)[1:], run_dir, out, module="")
    return run_under_torchrun(launch, rank_args, run_dir, started_at, lambda text: out.write(text + "\n"))


def _detach(cli_args: list[str], run_dir: Path, out: TextIO, module: str = "engine.cli") -> int:
    from engine.runs.detach import DetachError, start_detached

    try:
        child = start_detached(cli_args, run_dir, module)
    except DetachError as exc:
        raise UserFacingError(str(exc)) from None
    out.write(f"training in the background (pid {child.pid}) in {run_dir}\n"
              f"  watch:   lightlm-tui monitor {run_dir}\n"
              f"  control: lightlm-tui control {run_dir} pause|resume|save|eval|stop\n"
              f"  log:     {child.log}\n")
    return 0


def _existing_run(path: str) -> Path:
    run_dir = Path(path)
    if not (run_dir / "config.toml").is_file():
        raise UserFacingError(f"{run_dir} is not a run directory (no config.toml in it)")
    return run_dir


def cmd_resume(args: argparse.Namespace, out: TextIO) -> int:
    from engine.train.checkpoint import load_latest

    run_dir = _existing_run(args.run_dir)
    config = load_config(run_dir / "config.toml")
    launch = _launch(args, config)
    if _under_torchrun():
        from engine.launch import budget_start_from_environment

        started_at = budget_start_from_environment() or (_process_start() if config.train.time_budget_s else None)
        return _train(config, run_dir, resume=True, out=out, budget_started_at=started_at)
    refuse_if_training(run_dir)
    if args.from_checkpoint:
        from engine.train.checkpoint import point_latest_at

        point_latest_at(run_dir, args.from_checkpoint)
    load_latest(run_dir)  # fail here, with the checkpoint's name, before any set-up
    started_at = _process_start() if config.train.time_budget_s else None  # what the budget has left counts from now
    if launch is not None:
        return _run_launch(launch, ["resume", str(run_dir)], run_dir, started_at, args.detach, out)
    if args.detach:
        return _detach(["resume", str(run_dir)], run_dir, out)
    return _train(config, run_dir, resume=True, out=out, budget_started_at=started_at)


def refuse_if_training(run_dir: Path) -> None:
    """Two processes training one run dir would overwrite each other's checkpoints."""
    from engine.runs.run_dir import summarize_run

    if summarize_run(run_dir).status == "running":
        raise UserFacingError(f"{run_dir} is training right now in another process; watch it with "
                              f"`lightlm-tui monitor {run_dir}` or stop it with `lightlm-tui control {run_dir} stop`")


def cmd_control(args: argparse.Namespace, out: TextIO) -> int:
    from engine.runs.run_dir import summarize_run

    run_dir = _existing_run(args.run_dir)
    summary = summarize_run(run_dir)
    if summary.status not in ("running", "unfinished"):  # unfinished: still setting up, or another host
        raise UserFacingError(f"{run_dir} is not training (status: {summary.status}); "
                              f"`lightlm-tui resume {run_dir}` continues it")
    send_request(run_dir, args.request)
    out.write(f"{args.request} requested; the run applies it after its current step (see {run_dir / 'events.jsonl'})\n")
    return 0


def cmd_eval(args: argparse.Namespace, out: TextIO) -> int:
    from engine.data.sources import load_documents
    from engine.data.token_store import prepare_token_store
    from engine.device import setup_compute
    from engine.train.evaluate import evaluate_model
    from engine.generation import load_run

    run_dir = _existing_run(args.run_dir)
    config = load_config(run_dir / "config.toml")
    compute = setup_compute(config.train.use_dtype)
    run = load_run(run_dir, device=str(compute.device))
    store = prepare_token_store(load_documents(config.data), config.data)
    t = config.train
    figures = evaluate_model(run.model, store.val, store.meta.val_bytes_per_token, t.max_seq_len,
                             t.batch_size, t.eval_batches, compute.device, compute.autocast)
    if figures is None:
        raise UserFacingError("the validation split is too short to evaluate; raise data.val_fraction")
    result = {"run_dir": str(run_dir), "step": run.step, **dataclasses.asdict(figures)}
    if args.json:
        out.write(json.dumps(result) + "\n")
    else:
        out.write(f"{run_dir} at step {run.step}: val loss {figures.val_loss:.4f} | val bpb "
                  f"{figures.val_bpb:.4f} | perplexity {figures.perplexity:.2f}\n")
    return 0


def cmd_generate(args: argparse.Namespace, out: TextIO) -> int:
    from engine.generation import SamplingSettings, generate_text, load_run

    run = load_run(_existing_run(args.run_dir))
    settings = SamplingSettings(args.max_new_tokens, args.temperature, args.top_k or None,
                                args.top_p if args.top_p < 1 else None, args.seed)
    printed = [0]

    def stream(text: str) -> None:  # print only what is new; decoding can revise a partial byte
        if text.startswith(text[: printed[0]]) and len(text) > printed[0]:
            out.write(text[printed[0]:])
            out.flush()
            printed[0] = len(text)

    out.write(args.prompt)
    text = generate_text(run, args.prompt, settings, on_text=stream)
    out.write(text[printed[0]:] + "\n")
    return 0


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    run_dir, target = _existing_run(args.run_dir), Path(args.out) if args.out else None
    if args.format == "gguf":
        from engine.gguf_export import export_gguf

        written = export_gguf(run_dir, target, args.gguf_type)
        out.write(f"exported to {written} ({args.gguf_type}; run with `llama-completion -m {written}` "
                  "or an Ollama Modelfile `FROM` line)\n")
        return 0
    from engine.export import export_hf_and_adapters

    written, adapters = export_hf_and_adapters(run_dir, target)
    if adapters is not None:
        adapter, base = adapters
        out.write(f"exported the merged model (adapters folded in, float32) to {written} (load with "
                  f"AutoModelForCausalLM.from_pretrained)\n"
                  f"exported the adapters to {adapter} (peft) and their base model to {base}: "
                  f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(base)!r}), {str(adapter)!r})\n")
        return 0
    out.write(f"exported to {written} (load with AutoModelForCausalLM.from_pretrained)\n")
    return 0


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    from engine.hardware import FAIL, probe

    report = probe(args.runs_dir)
    if args.json:
        out.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        for check in report.checks:
            out.write(f"  {check.status:<4}  {check.name:<22} {check.sentence}\n")
    return 1 if report.worst == FAIL else 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


COMMANDS = {
    "inspect": cmd_inspect, "train": cmd_train, "resume": cmd_resume, "eval": cmd_eval, "generate": cmd_generate,
    "export": cmd_export, "check": cmd_check,
    "control": cmd_control, "plan": cmd_plan,
}


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one headless command; returns the process exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "presets":
        return cmd_presets(out)
    if args.command not in COMMANDS:
        parser.print_help(out)
        return 0
    try:
        return COMMANDS[args.command](args, out)
    except (ConfigError, UserFacingError) as exc:  # one sentence, no traceback
        err.write(f"lightlm-tui: {exc}\n")
    return EXIT_BAD_INPUT


if __name__ == "__main__":  # `python -m engine.cli`: how `--detach` starts its background process
    sys.exit(main())
