"""Our block-wise cross-entropy equals F.cross_entropy in value and gradient."""

import pytest
import torch
import torch.nn.functional as F

import engine.model.cross_entropy as ce_module
from engine.model.cross_entropy import cross_entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_torch_cross_entropy(dtype, monkeypatch):
    monkeypatch.setattr(ce_module, "ELEMENTS_PER_BLOCK", 3 * 500)  # several blocks, a ragged last one
    torch.manual_seed(0)
    base = torch.randn(37, 500) * 4
    targets = torch.randint(0, 500, (37,))
    targets[[3, 11, 30]] = -100
    ours_in = base.to(dtype).requires_grad_()
    ref_in = base.to(dtype).requires_grad_()
    ours = cross_entropy(ours_in, targets)
    ref = F.cross_entropy(ref_in.float(), targets, ignore_index=-100)
    (ours * 2.5).backward()
    (ref * 2.5).backward()
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, ref, atol=1e-6)
    tolerance = 1e-7 if dtype == torch.float32 else 1e-3
    assert torch.allclose(ours_in.grad.float(), ref_in.grad.float(), atol=tolerance)
    assert ours_in.grad.dtype == dtype
    assert torch.equal(ours_in.grad[[3, 11, 30]], torch.zeros(3, 500, dtype=dtype))


def test_all_ignored_gives_nan_like_torch():
    logits = torch.randn(4, 10, requires_grad=True)
    targets = torch.full((4,), -100)
    assert torch.isnan(cross_entropy(logits, targets)) and torch.isnan(F.cross_entropy(logits, targets))
