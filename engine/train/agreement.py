"""Rank 0's decision and learning rate on every rank: one broadcast of ints per step boundary.

Under DDP only rank 0 reads the requests and a time budget's clock, so only it can decide; the
other ranks take its answer, and so never disagree on what happens next. On one process the
broadcast is a plain return.
"""

from __future__ import annotations

import struct

import torch

from engine.train.decision import Decision
from engine.train.distributed import Distributed


def float_bits(value: float) -> int:
    """A float64 as the int64 with the same bits (so it crosses an int broadcast exactly)."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def agreed(decision: Decision, lr: float, place: Distributed, device: torch.device) -> tuple[Decision, float]:
    """Rank 0's `decision` and `lr` (what the other ranks pass is ignored)."""
    values = place.broadcast_ints([*decision.encode(), float_bits(lr)], device)
    return Decision.decode(values[:-1]), bits_float(values[-1])
