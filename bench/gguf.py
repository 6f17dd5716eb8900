"""GGUF export figures (docs/benchmarks/gguf.md): file size, load time and greedy tokens/s in
llama-cpp-python for f32 / f16 / q8_0, beside our own `generate` on the same prompt and
length, and the held-out bits/byte of each file measured by llama.cpp (q8_0 against f32).

Exports the run (into a scratch folder) once per type, then measures round by round,
interleaving the formats and our model so the shared machine's drift hits all alike; load
time and tokens/s are the median over the rounds. Bits/byte is deterministic and measured
once per file, on the run's own held-out split (the windows `lightlm-tui eval` uses).

    lightlm-tui train --preset laptop --name laptop       # about 5 minutes; or any finished run
    python bench/gguf.py runs/laptop [--rounds 3] [--new-tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Python puts this script's folder first on sys.path, where this file would shadow the `gguf`
# package the export imports: drop the folder, add the repository root.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

TYPES = ("f32", "f16", "q8_0")
PROMPT = "import os\nimport sys\n\n\ndef main("


def open_llama(path: Path, n_ctx: int, threads: int, logits_all: bool = False):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads,
                           n_threads_batch=threads, logits_all=logits_all, verbose=False)


def llama_load_s(path: Path, n_ctx: int, threads: int) -> float:
    start = time.perf_counter()
    llm = open_llama(path, n_ctx, threads)
    elapsed = time.perf_counter() - start
    llm.close()
    return elapsed


def llama_tokens_per_s(path: Path, ids: list[int], new_tokens: int, n_ctx: int, threads: int) -> float:
    """Greedy tokens/s, the prompt's evaluation included (as our side counts it), EOS ignored."""
    llm = open_llama(path, n_ctx, threads)
    produced = 0
    start = time.perf_counter()
    for _ in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        produced += 1
        if produced == new_tokens:
            break
    elapsed = time.perf_counter() - start
    llm.close()
    return new_tokens / elapsed


def ours_tokens_per_s(run, ids: list[int], new_tokens: int) -> float:
    import torch

    start = time.perf_counter()
    run.model.generate(torch.tensor([ids]), new_tokens, temperature=0.0)  # no eos_id: exactly new_tokens
    return new_tokens / (time.perf_counter() - start)


def llama_bits_per_byte(path: Path, windows: list[np.ndarray], bytes_per_token: float, threads: int) -> float:
    """Mean next-token cross-entropy over the windows, from llama.cpp's own logits, in bits per byte."""
    n_ctx = len(windows[0])
    llm = open_llama(path, n_ctx, threads, logits_all=True)
    total, count = 0.0, 0
    for window in windows:
        inputs, targets = window[:-1].tolist(), window[1:]
        llm.reset()
        llm.eval(inputs)
        logits = np.asarray(llm.scores[: len(inputs)], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_z = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
        total += float((log_z - logits[np.arange(len(targets)), targets]).sum())
        count += len(targets)
    llm.close()
    return total / count / math.log(2) / bytes_per_token


def ours_bits_per_byte(run, windows: list[np.ndarray], bytes_per_token: float) -> float:
    """The same figure from our own model (fp32), so the table shows what export changed."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            tokens = torch.from_numpy(window)[None]
            _, _, ce = run.model(tokens[:, :-1], tokens[:, 1:])
            total += float(ce) * (len(window) - 1)
            count += len(window) - 1
    return total / count / math.log(2) / bytes_per_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run with a complete checkpoint (e.g. the laptop preset's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp and torch threads")
    parser.add_argument("--eval-windows", type=int, default=20, help="held-out windows for bits/byte")
    args = parser.parse_args()

    import torch

    from engine.config import load_config
    from engine.data.loader import eval_starts
    from engine.data.sources import load_documents
    from engine.data.token_store import prepare_token_store
    from engine.runs.trained_run import load_run
    from engine.use.gguf_export import export_gguf

    torch.set_num_threads(args.threads)
    config = load_config(args.run_dir / "config.toml")
    run = load_run(args.run_dir)
    ids = run.tokenizer.encode_batch([PROMPT])[0]
    n_ctx = config.model.context_len
    if len(ids) + args.new_tokens > n_ctx:
        raise SystemExit(f"prompt + --new-tokens must fit context_len {n_ctx}; lower --new-tokens")

    with tempfile.TemporaryDirectory() as scratch:
        files = {t: export_gguf(args.run_dir, Path(scratch) / f"model-{t}.gguf", t) for t in TYPES}
        sizes = {t: p.stat().st_size for t, p in files.items()}
        load_s: dict[str, list[float]] = {t: [] for t in TYPES}
        speed: dict[str, list[float]] = {t: [] for t in (*TYPES, "ours")}
        for round_index in range(args.rounds):
            for t in TYPES:
                load_s[t].append(llama_load_s(files[t], n_ctx, args.threads))
                speed[t].append(llama_tokens_per_s(files[t], ids, args.new_tokens, n_ctx, args.threads))
            speed["ours"].append(ours_tokens_per_s(run, ids, args.new_tokens))
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} tok/s" for k, v in speed.items()),
                  flush=True)

        store = prepare_token_store(load_documents(config.data), config.data)
        starts = eval_starts(len(store.val), n_ctx - 1, args.eval_windows)
        windows = [np.asarray(store.val[s:s + n_ctx], dtype=np.int64) for s in starts]
        bpb = {t: llama_bits_per_byte(files[t], windows, store.meta.val_bytes_per_token, args.threads) for t in TYPES}
        bpb["ours"] = ours_bits_per_byte(run, windows, store.meta.val_bytes_per_token)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"\n{args.run_dir} ({run.model.num_parameters():,} parameters), {cpu}, {args.threads} threads, "
          f"{args.new_tokens} new tokens, median of {args.rounds}; bits/byte on {len(windows)} held-out windows "
          f"of {n_ctx} tokens\n")
    print("| | file size | load time | tokens/s | held-out bits/byte |")
    print("|---|---|---|---|---|")
    for t in TYPES:
        change = "" if t == "f32" else f" ({bpb[t] - bpb['f32']:+.4f} vs f32)"
        print(f"| GGUF {t} | {sizes[t] / 2**20:,.2f} MiB | {statistics.median(load_s[t]) * 1000:,.0f} ms | "
              f"{statistics.median(speed[t]):,.0f} | {bpb[t]:.4f}{change} |")
    print(f"| ours (`generate`, fp32) | - | - | {statistics.median(speed['ours']):,.0f} | {bpb['ours']:.4f} |")


if __name__ == "__main__":
    main()
