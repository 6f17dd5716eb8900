"""The data path's speed: tokenizer training, pre-tokenisation, cached restart, loader starvation.

    python bench/data_pipeline.py            # python-stdlib corpus, laptop-preset loader run
    python bench/data_pipeline.py --steps 100

Prints: BPE training time and MB/s, pre-tokenisation MB/s (batched Dataset.map), the time a
second start on the same data takes (the cache), and, from a short real training run, how
long the trainer waited on an empty batch queue as a share of its training time.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from engine.config import DataConfig, load_preset
from engine.data.sources import load_documents
from engine.data.token_store import prepare_token_store
from engine.data.tokenizer import build_tokenizer
from engine.train.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="training steps for the loader measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data = DataConfig(source="python-stdlib", tokenizer_vocab_size=4096, cache_dir=scratch)
        start = time.perf_counter()
        dataset = load_documents(data)
        load_s = time.perf_counter() - start
        megabytes = sum(len(t.encode()) for t in dataset["text"]) / 1e6
        print(f"corpus: {len(dataset)} documents, {megabytes:.1f} MB, loaded in {load_s:.2f} s")

        start = time.perf_counter()
        build_tokenizer("bpe", dataset["text"], 4096)
        bpe_s = time.perf_counter() - start
        print(f"BPE training (vocab 4096): {bpe_s:.2f} s, {megabytes / bpe_s:.1f} MB/s")

        start = time.perf_counter()
        store = prepare_token_store(dataset, data)
        first_s = time.perf_counter() - start
        tokens = store.meta.train_tokens + store.meta.val_tokens
        encode_s = max(1e-9, first_s - bpe_s)
        print(f"first preparation (BPE + pre-tokenise + write): {first_s:.2f} s; pre-tokenise about "
              f"{megabytes / encode_s:.1f} MB/s; {tokens:,} tokens, {megabytes * 1e6 / tokens:.2f} bytes/token")

        start = time.perf_counter()
        load_documents(data)
        again = prepare_token_store(dataset, data)
        cached_s = time.perf_counter() - start
        assert again.from_cache
        print(f"cached restart (load corpus + fingerprint + open store): {cached_s:.2f} s")

        config = load_preset("laptop")
        config = dataclasses.replace(
            config,
            train=dataclasses.replace(config.train, max_steps=args.steps, eval_interval=0,
                                      checkpoint_every_steps=0, checkpoint_every_minutes=0.0,
                                      use_epoch_checkpoints=False, log_interval=10),
            data=dataclasses.replace(config.data, cache_dir=scratch),
        )
        trainer = Trainer(config, Path(scratch) / "run")
        trainer.run()
        share = trainer.loader_wait_s / trainer.train_s
        print(f"loader: waited {trainer.loader_wait_s * 1e3:.1f} ms of {trainer.train_s:.1f} s training "
              f"({share:.2%} of step time) over {args.steps} steps of the laptop preset")


if __name__ == "__main__":
    main()
