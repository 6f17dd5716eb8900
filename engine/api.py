"""The engine's jobs, one function each: what the CLI, the app's engine thread and the app call.

    check          this machine: Python, torch, GPU, bf16, RAM, disk
    resolve_config a preset or TOML file with --set overrides applied
    inspect        a config's size, FLOPs and training memory, and its problems
    plan           a time budget -> a config sized on this machine
    fine_tune      a config that starts from another run's weights
    start_run      train a config: here, in the background, or as DDP ranks under torchrun
    resume_run     continue a run from its latest (or a named) checkpoint, in the same ways
    control_run    pause / resume / save / eval / stop a run training in another process
    evaluate       a run's checkpoint on its held-out text
    generate       text sampled from a run
    export         a Hugging Face folder (and peft adapters for LoRA) or a GGUF file
    watch          the run folders a Monitor or a comparison can follow

Each returns a result (a dataclass or a path) or raises a UserFacingError whose sentence is the
whole message; none parses arguments or prints. Torch-free at import: each job imports what it
needs when it runs, so a front end loads torch only when it trains or samples.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import ConfigError, RunConfig, apply_overrides, load_config, load_preset, validate
from engine.errors import UserFacingError
from engine.launch.torchrun import Launch
from engine.model.estimates import MemoryEstimate
from engine.runs.events import Event, LogLine, RunFinished
from engine.runs.run_dir import (
    empty_run_dir,
    existing_run_dir,
    new_run_dir,
    run_config,
    summarize_run,
    write_run_config,
)

if TYPE_CHECKING:  # only for annotations: importing these loads torch
    from engine.machine.hardware import HardwareReport
    from engine.planner.plan import Plan
    from engine.train.evaluate import EvalFigures
    from engine.use.generate import SamplingSettings

EXPORT_FORMATS = ("hf", "gguf")


def _ignore(event: Event) -> None:
    pass


# ----- this machine and configs ----------------------------------------------------------------
def check(runs_dir: str | os.PathLike[str] = "runs") -> HardwareReport:
    """The hardware report: each check with its status and sentence."""
    from engine.machine.hardware import probe

    return probe(runs_dir)


def resolve_config(preset: str | None = None, config_file: str | os.PathLike[str] | None = None,
                   overrides: Sequence[str] = ()) -> RunConfig:
    """The config of `config_file` or `preset` (the defaults when neither), with `overrides`
    ("section.key=value") applied."""
    if preset and config_file:
        raise UserFacingError("give a preset or a config file, not both")
    if config_file:
        config = load_config(config_file)
    elif preset:
        config = load_preset(preset)
    else:
        config = RunConfig()
    return apply_overrides(config, list(overrides))


@dataclass(frozen=True)
class ConfigSummary:
    """What a config costs: sizes, FLOPs, training memory, and what is wrong with it."""

    config: RunConfig
    parameters: int  # all weights, adapters included
    trainable_parameters: int  # a LoRA run trains its adapters alone
    active_parameters: int  # per token; less than parameters for a mixture of experts
    adapter_parameters: int
    flops_per_token: int
    tokens_per_step: int
    memory: MemoryEstimate
    problems: list[str]


def inspect(config: RunConfig) -> ConfigSummary:
    """The config's size and cost by the estimates (no torch), and its problems."""
    from engine.config.finetune import lora_parameter_count
    from engine.model.estimates import active_parameter_count, flops_per_token, parameter_count, training_memory

    m, t, lora = config.model, config.train, config.lora
    adapters = lora_parameter_count(m, lora.target_modules, lora.rank) if lora.enabled else 0
    return ConfigSummary(
        config=config, parameters=parameter_count(m) + adapters,
        trainable_parameters=adapters or parameter_count(m),
        active_parameters=active_parameter_count(m) + adapters, adapter_parameters=adapters,
        flops_per_token=flops_per_token(m, t.max_seq_len), tokens_per_step=t.tokens_per_step,
        memory=training_memory(m, t, lora=lora), problems=[str(p) for p in validate(config)],
    )


def validated(config: RunConfig) -> RunConfig:
    """`config` when it can train here; ConfigError names every problem (GPU-only settings are
    checked against this machine)."""
    problems = validate(config, cuda_available=_cuda_available())
    if problems:
        raise ConfigError(problems)
    return config


def memory_warning(config: RunConfig) -> str | None:
    """Before any time is spent: a sentence when the estimate exceeds what the device has free."""
    import psutil

    from engine.model.estimates import memory_shortfall

    if _cuda_available():
        import torch

        free, _ = torch.cuda.mem_get_info()
        return memory_shortfall(config.model, config.train, free, "GPU memory", "cuda", lora=config.lora)
    return memory_shortfall(config.model, config.train, psutil.virtual_memory().available, lora=config.lora)


def plan(budget: str | float, base: RunConfig, *, overrides: Sequence[str] = (), name: str = "",
         started_at: float | None = None, trains_here: bool = False) -> Plan:
    """Size `base` for `budget` ("5m", or seconds) on this machine, by measurement.

    `started_at`: when the budget started counting (the planning time then comes out of it);
    None: it starts with the run. `overrides` and `name` win over the plan's own choices."""
    from engine.config.durations import parse_budget
    from engine.planner.plan import plan_for_this_machine

    budget_s = parse_budget(budget) if isinstance(budget, str) else float(budget)
    planned = plan_for_this_machine(budget_s, base, started_at=started_at, trains_here=trains_here)
    config = apply_overrides(planned.config, list(overrides)) if overrides else planned.config
    if name:
        config = dataclasses.replace(config, name=name)
    return dataclasses.replace(planned, config=config)


def fine_tune(config: RunConfig, init_from: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """`config` made to start from `init_from` (a run or a checkpoint folder): the base's model
    shape and tokenizer, then `overrides` again, so one that contradicts the base is refused by
    name when the run starts."""
    from engine.train.init_from import finetune_config, resolve_base

    return apply_overrides(finetune_config(config, resolve_base(str(init_from))), list(overrides))


# ----- runs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartedRun:
    """Where a run went and, when it trained here, how it ended."""

    run_dir: Path
    finished: RunFinished | None = None  # trained in this process
    pid: int | None = None  # training in the background
    log: Path | None = None  # the background process's output
    exit_code: int = 0  # torchrun's, when its ranks ran in the foreground

    @property
    def ok(self) -> bool:
        if self.finished is not None:
            return self.finished.status in ("completed", "stopped")
        return self.exit_code == 0


def is_torchrun_rank() -> bool:
    """Whether this process is one rank of a run torchrun started."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start_run(
    config: RunConfig,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    launch: Launch | None = None,
    detach: bool = False,
    on_event: Callable[[Event], None] = _ignore,
    control: object | None = None,
    threads: int | None = None,
    budget_started_at: float | None = None,
) -> StartedRun:
    """Train `config` into `run_dir` (a new or empty folder; default a fresh one under
    train.runs_dir). `launch` with more than one process runs DDP ranks under torchrun; `detach`
    returns at once with the run training in the background. `control` (a TrainControl) and
    `on_event` reach a run that trains in this process; `budget_started_at` is when a time
    budget started counting (default: when training starts). `launch` None: train.processes
    processes on this machine."""
    if is_torchrun_rank():  # the launcher chose the config and the run dir
        if run_dir is None:
            raise UserFacingError("under torchrun, give every rank the same --run-dir")
        return _run_as_rank(config, Path(run_dir), False, on_event, control, threads, budget_started_at)
    launch = _checked(launch, config)
    if launch.nproc != config.train.processes:  # what the run uses is what its config says
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, processes=launch.nproc))
    # The settings alone: the process that trains checks them against its own hardware when it
    # sets up, so a launch from the app's UI thread never has to load torch here.
    problems = validate(config)
    if problems:
        raise ConfigError(problems)
    target = empty_run_dir(run_dir) if run_dir is not None else new_run_dir(config.train.runs_dir, config.name)
    if launch.world_size > 1 or detach:
        write_run_config(target, config)
    rank_args = ["train", "--config", str(target / "config.toml"), "--run-dir", str(target)]
    return _execute(config, target, False, rank_args, launch, detach, on_event, control, threads, budget_started_at)


def resume_run(
    run_dir: str | os.PathLike[str],
    *,
    from_checkpoint: str | None = None,
    launch: Launch | None = None,
    detach: bool = False,
    on_event: Callable[[Event], None] = _ignore,
    control: object | None = None,
    threads: int | None = None,
    budget_started_at: float | None = None,
) -> StartedRun:
    """Continue `run_dir` from its latest checkpoint (or `from_checkpoint`, e.g. step_000500,
    which becomes the latest), where `launch` and `detach` say, as start_run does."""
    target = existing_run_dir(run_dir)
    config = run_config(target)
    if is_torchrun_rank():
        return _run_as_rank(config, target, True, on_event, control, threads, budget_started_at)
    launch = _checked(launch, config)
    if summarize_run(target).status == "running":  # two processes would overwrite each other's checkpoints
        raise UserFacingError(f"{target} is training right now in another process; watch it with "
                              f"`lightlm-tui monitor {target}` or stop it with `lightlm-tui control {target} stop`")
    from engine.runs.checkpoint import load_latest, point_latest_at

    if from_checkpoint:
        point_latest_at(target, from_checkpoint)
    load_latest(target)  # fail here, with the checkpoint's name, before any set-up
    return _execute(config, target, True, ["resume", str(target)], launch, detach, on_event, control, threads,
                    budget_started_at)


def _checked(launch: Launch | None, config: RunConfig) -> Launch:
    launch = (launch or Launch()).for_config(config.train.processes)
    problems = launch.problems()
    if problems:
        raise UserFacingError("; ".join(problems))
    return launch


def _execute(config: RunConfig, run_dir: Path, resume: bool, rank_args: list[str], launch: Launch, detach: bool,
             on_event: Callable[[Event], None], control: object | None, threads: int | None,
             budget_started_at: float | None) -> StartedRun:
    """Where a run executes, decided here alone: torchrun ranks (foreground or background), a
    background process, or this thread."""
    from engine.launch import torchrun

    if launch.world_size > 1:
        on_event(LogLine("info", f"training as {launch.nproc} process(es) on this machine, {launch.world_size} "
                                 f"in all (DDP) in {run_dir}"))
        command = torchrun.torchrun_command(launch, rank_args)
        if detach:
            return _detached(command[1:], run_dir, module="")
        say = lambda text: on_event(LogLine("info", text))
        return StartedRun(run_dir, exit_code=torchrun.run_under_torchrun(launch, rank_args, run_dir,
                                                                         budget_started_at, say))
    if detach:
        return _detached(rank_args, run_dir, module="engine.cli")
    from engine.launch.in_process import train_here

    finished = train_here(config, run_dir, on_event, control, resume=resume, threads=threads,
                          budget_started_at=budget_started_at)
    return StartedRun(run_dir, finished=finished)


def _detached(args: list[str], run_dir: Path, module: str) -> StartedRun:
    from engine.launch.background import DetachError, start_detached

    try:
        child = start_detached(args, run_dir, module)
    except (DetachError, OSError) as exc:
        raise UserFacingError(str(exc)) from None
    return StartedRun(run_dir, pid=child.pid, log=child.log)


def _run_as_rank(config: RunConfig, run_dir: Path, resume: bool, on_event: Callable[[Event], None],
                 control: object | None, threads: int | None, budget_started_at: float | None) -> StartedRun:
    from engine.launch.in_process import train_here
    from engine.launch.torchrun import budget_start_from_environment

    started_at = budget_start_from_environment() or budget_started_at  # the launcher's clock, when it set one
    finished = train_here(config, run_dir, on_event, control, resume=resume, threads=threads,
                          budget_started_at=started_at)
    return StartedRun(run_dir, finished=finished)


def control_run(run_dir: str | os.PathLike[str], request: str) -> Path:
    """Ask the run training in another process to pause, resume, save, eval or stop; it
    applies the request after its current step. Returns the run dir."""
    from engine.runs.control_channel import send_request

    target = existing_run_dir(run_dir)
    summary = summarize_run(target)
    if summary.status not in ("running", "unfinished"):  # unfinished: still setting up, or another host
        raise UserFacingError(f"{target} is not training (status: {summary.status}); "
                              f"`lightlm-tui resume {target}` continues it")
    send_request(target, request)
    return target


def watch(run_dirs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The run folders to follow in a Monitor (one) or a comparison (two or more)."""
    return [existing_run_dir(path) for path in run_dirs]


# ----- using a trained run -------------------------------------------------------------------
@dataclass(frozen=True)
class Evaluation:
    run_dir: Path
    step: int
    figures: EvalFigures


def evaluate(run_dir: str | os.PathLike[str]) -> Evaluation:
    """The latest checkpoint's held-out loss, bits per byte and perplexity."""
    from engine.data.sources import load_documents
    from engine.data.token_store import prepare_token_store
    from engine.machine.device import setup_compute
    from engine.runs.trained_run import load_run
    from engine.train.evaluate import evaluate_model

    target = existing_run_dir(run_dir)
    config = run_config(target)
    compute = setup_compute(config.train.use_dtype)
    run = load_run(target, device=str(compute.device))
    store = prepare_token_store(load_documents(config.data), config.data)
    t = config.train
    figures = evaluate_model(run.model, store.val, store.meta.val_bytes_per_token, t.max_seq_len,
                             t.batch_size, t.eval_batches, compute.device, compute.autocast)
    if figures is None:
        raise UserFacingError("the validation split is too short to evaluate; raise data.val_fraction")
    return Evaluation(target, run.step, figures)


def generate(run_dir: str | os.PathLike[str], prompt: str, settings: SamplingSettings,
             on_text: Callable[[str], None] | None = None) -> str:
    """The continuation of `prompt` by the run's latest checkpoint; `on_text` gets the text so
    far after each token."""
    from engine.runs.trained_run import load_run
    from engine.use.generate import generate_text

    return generate_text(load_run(existing_run_dir(run_dir)), prompt, settings, on_text=on_text)


@dataclass(frozen=True)
class Exported:
    """What an export wrote. A LoRA run's HF export is the merged model, with the adapters
    (for peft) and their base model beside it."""

    run_dir: Path
    format: str
    path: Path
    adapters: Path | None = None
    adapters_base: Path | None = None


def export(run_dir: str | os.PathLike[str], format: str = "hf", out: str | os.PathLike[str] | None = None,
           gguf_type: str = "f32") -> Exported:
    """Write the run's latest checkpoint as `format` ("hf": a transformers folder, default
    RUN_DIR/export/hf; "gguf": one llama.cpp file, default RUN_DIR/export/gguf/RUN-TYPE.gguf)."""
    if format not in EXPORT_FORMATS:
        raise UserFacingError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    target, out_path = existing_run_dir(run_dir), Path(out) if out else None
    if format == "gguf":
        from engine.use.gguf_export import export_gguf

        return Exported(target, format, export_gguf(target, out_path, gguf_type))
    from engine.use.hf_export import export_hf_and_adapters

    written, adapters = export_hf_and_adapters(target, out_path)
    if adapters is None:
        return Exported(target, format, written)
    return Exported(target, format, written, adapters=adapters[0], adapters_base=adapters[1])


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
