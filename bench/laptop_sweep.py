"""Which model learns best in a fixed wall-clock budget on this machine? (The `laptop` preset.)

Each candidate shape trains for the same number of seconds on the embedded python-stdlib
corpus (BPE tokenizer from engine.data, our Transformer, AdamW, bf16 autocast on CPU), with a
learning-rate schedule that follows elapsed time (warmup, then cosine to 10 %), so every
candidate finishes its schedule exactly at the budget. The score is bits per byte on held-out
files (every 50th document), which compares fairly across vocabulary sizes.

This harness predates the engine's trainer and keeps its own 30-line loop on purpose: it
measures shapes, not the trainer. Run it alone on the machine (it is a timing experiment).

    python bench/laptop_sweep.py                    # every candidate x 300 s (about an hour)
    python bench/laptop_sweep.py --budget 60 --only w256-l4
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from engine.config import ModelConfig
from engine.data.embedded import python_stdlib_documents
from engine.data.tokenizer import EOS, train_bpe
from engine.model.estimates import parameter_count
from engine.model.transformer import Transformer

CANDIDATES = {
    # name: (vocab, dims, layers, heads, kv_heads, ffn, batch, lr)
    "w192-l6": (4096, 192, 6, 3, 1, 512, 16, 2e-3),
    "w256-l4": (4096, 256, 4, 4, 2, 688, 16, 2e-3),
    "w256-l4-v8k": (8192, 256, 4, 4, 2, 688, 16, 2e-3),
    "w384-l4": (4096, 384, 4, 6, 2, 1024, 16, 1.5e-3),
    # second round, around the first round's winner (w192-l6)
    "w192-l6-v2k": (2048, 192, 6, 3, 1, 512, 16, 2e-3),
    "w192-l8": (4096, 192, 8, 3, 1, 512, 16, 2e-3),
    "w128-l6": (4096, 128, 6, 2, 1, 352, 16, 3e-3),
    # third round: separate size from learning rate
    "w128-l6-lr5": (4096, 128, 6, 2, 1, 352, 16, 5e-3),
    "w128-l4": (4096, 128, 4, 2, 1, 352, 16, 3e-3),
    "w192-l6-lr3": (4096, 192, 6, 3, 1, 512, 16, 3e-3),
}
SEQ = 256
VAL_EVERY = 50  # every 50th document is held out
VAL_WINDOWS = 64


def encode(tokenizer, docs) -> np.ndarray:
    eos = tokenizer.token_to_id(EOS)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch_fast([d.text for d in docs]):
        ids.extend(encoding.ids)
        ids.append(eos)
    return np.asarray(ids, dtype=np.int64)


def lr_at(fraction: float, peak: float, warmup: float = 0.05, floor: float = 0.1) -> float:
    if fraction < warmup:
        return peak * fraction / warmup
    progress = min(1.0, (fraction - warmup) / (1 - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def windows(tokens: np.ndarray, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    batch = torch.from_numpy(np.stack([tokens[s:s + SEQ + 1] for s in starts]))
    return batch[:, :-1], batch[:, 1:]


@torch.no_grad()
def val_bpb(model, val_tokens, bytes_per_token) -> tuple[float, float]:
    model.eval()
    starts = np.linspace(0, len(val_tokens) - SEQ - 2, VAL_WINDOWS).astype(np.int64)
    losses = []
    for chunk in np.array_split(starts, VAL_WINDOWS // 16):
        x, y = windows(val_tokens, chunk)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(x, y)[2].item())
    model.train()
    loss = float(np.mean(losses))
    return loss, loss / math.log(2) / bytes_per_token


def run_candidate(name, spec, data, budget_s, seed=0):
    vocab, dims, layers, heads, kv, ffn, batch, lr = spec
    train_tokens, val_tokens, bytes_per_token = data[vocab]
    config = ModelConfig(vocab_size=vocab, num_dims=dims, num_layers=layers, num_heads=heads,
                         num_kv_heads=kv, ffn_hidden_dims=ffn, context_len=SEQ)
    torch.manual_seed(seed)
    model = Transformer(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    start, step, tokens_seen = time.perf_counter(), 0, 0
    while (elapsed := time.perf_counter() - start) < budget_s:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(elapsed / budget_s, lr)
        x, y = windows(train_tokens, rng.integers(0, len(train_tokens) - SEQ - 1, batch))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss, _ = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, tokens_seen = step + 1, tokens_seen + x.numel()
    loss, bpb = val_bpb(model, val_tokens, bytes_per_token)
    return {"name": name, "params": parameter_count(config), "steps": step, "tokens": tokens_seen,
            "epochs": tokens_seen / len(train_tokens), "val_loss": loss, "val_bpb": bpb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of training per candidate")
    parser.add_argument("--only", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    args = parser.parse_args()

    docs = python_stdlib_documents()
    train_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY]
    val_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY == 0]
    val_bytes = sum(len(d.text.encode()) for d in val_docs)
    data = {}
    for vocab in sorted({CANDIDATES[n][0] for n in args.only}):
        tokenizer = train_bpe((d.text for d in train_docs), vocab)
        val_tokens = encode(tokenizer, val_docs)
        data[vocab] = (encode(tokenizer, train_docs), val_tokens, val_bytes / len(val_tokens))
    print(f"{len(train_docs)} train / {len(val_docs)} val documents; budget {args.budget:.0f} s per candidate; "
          f"{torch.get_num_threads()} threads")
    print(f"{'candidate':<13}{'params':>8}{'steps':>7}{'tokens':>12}{'epochs':>8}{'val loss':>9}{'val bpb':>9}")
    for name in args.only:
        r = run_candidate(name, CANDIDATES[name], data, args.budget)
        print(f"{r['name']:<13}{r['params'] / 1e6:>7.2f}M{r['steps']:>7}{r['tokens']:>12,}{r['epochs']:>8.2f}"
              f"{r['val_loss']:>9.3f}{r['val_bpb']:>9.3f}", flush=True)


if __name__ == "__main__":
    main()
