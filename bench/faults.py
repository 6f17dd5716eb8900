"""The long fault-injection run: kill -9 at random moments, kills inside checkpoint writes, and
full disks, each tried many times against one uninterrupted run; prints the
"Reliability" table of docs/benchmarks/faults.md (fault, times tried, outcome).

Every trial trains the tiny test model through the real CLI (fp32, CPU): a resume must succeed
from a complete checkpoint and end bit-identical to the uninterrupted run; a full disk must
leave the previous checkpoint complete and `latest`, with a sentence.

    python bench/faults.py [--kills 20] [--checkpoint-kills 5] [--full-disks 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig, save_config
from engine.runs.checkpoint import complete_checkpoints, latest_name

STEPS, EVERY = 24, 4


def tiny_config(root: Path) -> Path:
    config = RunConfig(
        name="faults",
        model=ModelConfig(vocab_size=512, num_dims=64, num_heads=4, num_kv_heads=2, num_layers=2,
                          ffn_hidden_dims=128, context_len=64),
        train=TrainConfig(max_steps=STEPS, max_seq_len=32, batch_size=4, learning_rate=3e-3, use_dtype="float32",
                          log_interval=1, eval_interval=8, eval_batches=2, checkpoint_every_steps=EVERY,
                          checkpoint_every_minutes=0.0, use_epoch_checkpoints=False, runs_dir=str(root), seed=7),
        data=DataConfig(source="python-docs", tokenizer_vocab_size=512, val_fraction=0.05,
                        cache_dir=str(root / "cache")),
    )
    path = root / "config.toml"
    save_config(config, path)
    return path


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, **kwargs)


def final_weights(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoints" / latest_name(run_dir) / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def resume_matches(run_dir: Path, reference: dict) -> bool:
    result = cli("resume", str(run_dir), timeout=600)
    return result.returncode == 0 and same(final_weights(run_dir), reference)


def kill_at_random(config: Path, run_dir: Path, delay_s: float, reference: dict) -> bool:
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--config", str(config), "--run-dir",
                                str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    process.wait()
    if not complete_checkpoints(run_dir):  # killed before the first checkpoint: start again, as a user would
        return cli("train", "--config", str(config), "--run-dir", str(run_dir / "again"), timeout=600).returncode == 0 \
            and same(final_weights(run_dir / "again"), reference)
    return resume_matches(run_dir, reference)


def kill_in_checkpoint(config: Path, run_dir: Path, step: int, reference: dict) -> bool:
    result = cli("train", "--config", str(config), "--run-dir", str(run_dir), timeout=600,
                 env={**os.environ, "LIGHTLM_FAULTS": f"kill:{step}"})
    killed = result.returncode == -signal.SIGKILL and latest_name(run_dir) == f"step_{step - EVERY:06d}"
    return killed and resume_matches(run_dir, reference)


def full_disk(config: Path, run_dir: Path, fraction: float) -> bool:
    first = cli("train", "--config", str(config), "--run-dir", str(run_dir), "--set", f"train.max_steps={EVERY}",
                timeout=600)
    if first.returncode != 0:
        return False
    text = (run_dir / "config.toml").read_text().replace(f"max_steps = {EVERY}", f"max_steps = {3 * EVERY}")
    (run_dir / "config.toml").write_text(text)
    size = int((run_dir / "checkpoints" / f"step_{EVERY:06d}" / "model.safetensors").stat().st_size * fraction)

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    result = cli("resume", str(run_dir), timeout=600, preexec_fn=small_disk)
    said = "could not write checkpoint" in result.stdout + result.stderr
    return result.returncode != 0 and said and latest_name(run_dir) == f"step_{EVERY:06d}" \
        and [p.name for p in complete_checkpoints(run_dir)] == [f"step_{EVERY:06d}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--checkpoint-kills", type=int, default=5)
    parser.add_argument("--full-disks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        config = tiny_config(root)
        started = time.monotonic()
        assert cli("train", "--config", str(config), "--run-dir", str(root / "straight"), timeout=600).returncode == 0
        run_s = time.monotonic() - started
        reference = final_weights(root / "straight")
        rows = []
        outcomes = [kill_at_random(config, root / f"kill-{i}", rng.uniform(2.0, run_s), reference)
                    for i in range(args.kills)]
        rows.append(("kill -9 at a random moment, then resume", outcomes))
        steps = [EVERY * rng.randint(2, STEPS // EVERY) for _ in range(args.checkpoint_kills)]
        outcomes = [kill_in_checkpoint(config, root / f"save-{i}", step, reference) for i, step in enumerate(steps)]
        rows.append(("kill -9 while a checkpoint is written, then resume", outcomes))
        outcomes = [full_disk(config, root / f"disk-{i}", rng.uniform(0.1, 0.9)) for i in range(args.full_disks)]
        rows.append(("disk full while saving", outcomes))
    print("| fault | tried | outcome |\n|---|---|---|")
    for fault, outcomes in rows:
        good = sum(outcomes)
        print(f"| {fault} | {len(outcomes)} | {good} / {len(outcomes)} as required |")


if __name__ == "__main__":
    main()
