"""Gradient averaging over two gloo ranks (engine/train/gradient_sync.py), in-process.

The hard case is a rank that runs out of memory in the middle of the step's last backward,
after some of its gradient buckets have already been all-reduced: the other rank must not be
left waiting, and both must retry the step with half the micro-batch and end where one process
training every window ends.
"""

import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine.config import ModelConfig, RunConfig, TrainConfig
from engine.data.loader import StepBatch
from engine.machine.device import setup_compute
from engine.model.builder import build_model
from engine.train.distributed import Distributed
from engine.train.optimizers import build_optimizer
from engine.train.step import TrainStep

# About 1M parameters: several 1 MiB buckets, so a backward can fail between two all-reduces.
MODEL = ModelConfig(vocab_size=512, num_dims=128, num_heads=4, num_kv_heads=2, num_layers=4, ffn_hidden_dims=256,
                    context_len=32)
WINDOWS = 8  # per step, over both ranks


def make_step(place: Distributed, micro_batch_size: int) -> tuple[torch.nn.Module, TrainStep]:
    compute = setup_compute("float32", threads=1)
    model = build_model(MODEL, compute.device, seed=0)
    config = RunConfig(model=MODEL, train=TrainConfig(learning_rate=3e-3))
    return model, TrainStep(model, build_optimizer(model, config, compute.device), compute, grad_clip=1.0,
                            micro_batch_size=micro_batch_size, ranks=place)


def batch(step: int) -> StepBatch:
    generator = torch.Generator().manual_seed(step)
    block = torch.randint(0, MODEL.vocab_size, (WINDOWS, 17), generator=generator)
    return StepBatch(step, block[:, :-1], block[:, 1:])


def one_rank(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # A rank left waiting fails in 30 s instead of hanging the test.
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    try:
        place = Distributed(rank, 2, rank)
        model, step = make_step(place, micro_batch_size=4)
        assert len(step.sync.buckets) >= 3
        failures = []
        if rank == 1:
            # Rank 1 fails in backward while the first layer's gradient is being accumulated
            # (the buckets of the later layers have gone out already), once, at step 1.
            first_layer = next(p for name, p in model.named_parameters() if "layers.0." in name)

            def out_of_memory(grad):
                if not failures and grad is not None:
                    failures.append(step.sync.next_bucket)
                    raise torch.OutOfMemoryError("out of memory (test)")
                return grad

            first_layer.register_hook(out_of_memory)
        mine = slice(rank * WINDOWS // 2, (rank + 1) * WINDOWS // 2)
        retries = []
        for index in range(3):
            full = batch(index)
            result = step(StepBatch(index, full.inputs[mine], full.targets[mine]), lr=3e-3)
            retries.append(result.memory_retries)
        results[rank] = {"retries": retries, "micro": step.micro_batch_size, "failed_after_buckets": failures,
                         "weights": {k: v.clone() for k, v in model.state_dict().items()}}
    finally:
        dist.destroy_process_group()


def test_a_rank_out_of_memory_mid_backward_retries_with_every_rank_and_trains_like_one_process():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(one_rank, args=(port, results), nprocs=2, join=True)
        results = dict(results)
    assert results[1]["failed_after_buckets"][0] >= 1  # some buckets were all-reduced before the failure
    assert results[0]["retries"] == results[1]["retries"] == [1, 0, 0]  # rank 0 retried with rank 1
    assert results[0]["micro"] == results[1]["micro"] == 2
    single_model, single = make_step(Distributed(), micro_batch_size=None)
    for index in range(3):
        single(batch(index), lr=3e-3)
    reference = single_model.state_dict()
    for rank in (0, 1):
        weights = results[rank]["weights"]
        assert all(torch.allclose(weights[k], reference[k], rtol=1e-4, atol=1e-5) for k in reference), rank
    assert all(torch.equal(results[0]["weights"][k], results[1]["weights"][k]) for k in reference)


def test_on_one_process_there_is_no_bucket_and_gradients_are_freed_between_steps():
    model, step = make_step(Distributed(), micro_batch_size=None)
    assert step.sync is None
    step(batch(0), lr=3e-3)
    assert all(p.grad is None for p in model.parameters())
