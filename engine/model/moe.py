"""Mixture-of-experts feed-forward: a top-k router over stacked SwiGLU experts.

Shapes: N tokens (batch x time flattened), C num_dims, F ffn_hidden_dims (one expert's hidden
width), E routed experts, k active experts per token.

Routing runs in float32 (autocast off): the choice between experts is a comparison of
scores, and bf16's 8 bits of mantissa would tie or swap close ones. Two ways to keep the
experts evenly loaded (`use_lossfreebalance`):
- auxiliary loss (Switch / Mixtral): softmax scores, top-k, gates renormalised over the
  chosen experts; forward returns `coef * E * sum_e(fraction routed to e * mean score of e)`,
  whose minimum (1 x coef) is the uniform load.
- loss-free (DeepSeek-V3): sigmoid scores; a per-expert bias buffer is added to the scores
  only to choose the top-k, the gates are the unbiased scores normalised over the chosen
  experts. After each optimizer step `update_bias()` moves the bias of every expert by
  `rate * sign(mean load - its load)`, the loads counted over all micro-batches of the step.
  The bias is a buffer (float32, saved in checkpoints): no gradient reaches it, no optimizer
  sees it.

Dispatch is vectorised: the (token, expert) pairs are sorted by expert with a stable argsort,
the tokens gathered into one contiguous slice per expert, every expert run on its slice
(`torch._grouped_mm` for all experts at once on CUDA in bf16, else a loop over experts), and
the gate-weighted outputs scatter-added back to their tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.config import ModelConfig
from engine.model.layers import ACTIVATIONS, HIDDEN_MATRICES, ROUTERS, FeedForward


class Router(nn.Module):
    """The router's weight (E, C): one score per expert from each token."""

    def __init__(self, num_dims: int, num_experts: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, num_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Router logits (N, E) in float32, whatever the autocast around it."""
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), self.weight.float())


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored stacked, each weight laid out like nn.Linear's (out, in):
    gate_proj and up_proj (E, F, C), down_proj (E, C, F). So each expert's matrix is a
    hidden matrix to the optimizer (Muon orthogonalises each [out, in] slice on its own)."""

    def __init__(self, num_experts: int, num_dims: int, hidden_dims: int, activation: str) -> None:
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(num_experts, hidden_dims, num_dims))
        self.up_proj = nn.Parameter(torch.empty(num_experts, hidden_dims, num_dims))
        self.down_proj = nn.Parameter(torch.empty(num_experts, num_dims, hidden_dims))
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x (M, C) sorted by expert, `counts` (E,) tokens per expert -> (M, C)."""
        # Under autocast the gathered tokens are still float32 (the norm's output); the grouped
        # kernel takes the autocast dtype directly.
        autocast = torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
        if use_grouped_mm(x, dtype, self.down_proj.shape):
            return self._grouped(x.to(dtype), counts)
        return self._looped(x, counts)

    def _looped(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        # One host sync for the split sizes; each expert then runs ordinary matmuls on its slice.
        outputs = []
        for e, xs in enumerate(torch.split(x, counts.tolist())):
            if xs.shape[0] == 0:
                continue
            h = self.act(xs @ self.gate_proj[e].mT) * (xs @ self.up_proj[e].mT)
            outputs.append(h @ self.down_proj[e].mT)
        return torch.cat(outputs) if outputs else x.new_zeros(x.shape)

    def _grouped(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        dtype = x.dtype

        def mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return torch._grouped_mm(a, w.to(dtype).mT, offs=offsets)

        h = self.act(mm(x, self.gate_proj)) * mm(x, self.up_proj)
        return mm(h, self.down_proj)


def use_grouped_mm(x: torch.Tensor, dtype: torch.dtype, expert_shape: torch.Size) -> bool:
    """Grouped matmul where it exists and is fast: CUDA, bf16, compute capability 9.0 or later
    (its kernels' floor), and widths whose rows are 16-byte aligned (multiples of 8 in bf16),
    which the kernel requires. Elsewhere (the CPU included) the loop over experts runs: torch's
    CPU kernel measured 0.97x the loop's tokens/s in training (laptop-shape MoE, bf16, AMD EPYC
    with native bf16, interleaved A/B, 2026-11-26)."""
    _, c, f = expert_shape
    return (
        x.is_cuda and dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")
        and c % 8 == 0 and f % 8 == 0 and torch.cuda.get_device_capability(x.device) >= (9, 0)
    )


def _in_backward_recompute() -> bool:
    """True while autograd recomputes a checkpointed forward (gradient checkpointing), whose
    tokens were already counted the first time through. Not checked inside torch.compile; a
    recompute counted there would double every count alike, which changes neither the load
    fractions nor the sign of a bias update."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1


class MoEFeedForward(nn.Module):
    """Routed experts plus always-on shared experts; forward(x) -> (output, aux loss or None)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, f = config.num_dims, config.ffn_hidden_dims
        self.num_experts, self.top_k = config.moe_num_experts, config.moe_active_experts
        self.loss_free = config.use_lossfreebalance
        self.aux_loss_coef = config.moe_aux_loss_coef
        self.bias_update_rate = config.moe_bias_update_rate
        self.router = Router(c, self.num_experts)
        self.experts = GroupedExperts(self.num_experts, c, f, config.activation_fn)
        # Shared experts all see every token, so together they are one dense SwiGLU S x F wide.
        self.shared_experts = (
            FeedForward(config, hidden_dims=f * config.moe_shared_experts) if config.moe_shared_experts else None
        )
        if self.loss_free:
            self.register_buffer("expert_bias", torch.zeros(self.num_experts, dtype=torch.float32))
        # Token-expert assignments since the last optimizer step (training forwards only).
        self.register_buffer("tokens_per_expert", torch.zeros(self.num_experts, dtype=torch.float32),
                             persistent=False)

    def parameter_kinds(self) -> dict[str, list[nn.Parameter]]:
        """This layer's own parameters by kind (the shared experts' linears declare themselves)."""
        return {
            ROUTERS: [self.router.weight],
            HIDDEN_MATRICES: [self.experts.gate_proj, self.experts.up_proj, self.experts.down_proj],
        }

    @torch.no_grad()
    def init_weights(self, std: float, residual_std: float) -> None:
        """The dense FFN's init for every expert (down_proj writes into the residual stream)."""
        nn.init.normal_(self.router.weight, std=std)
        nn.init.normal_(self.experts.gate_proj, std=std)
        nn.init.normal_(self.experts.up_proj, std=std)
        nn.init.normal_(self.experts.down_proj, std=residual_std)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For tokens x (N, C): chosen experts (N, k), their gates (N, k), all scores (N, E);
        scores and gates in float32."""
        logits = self.router(x)
        if self.loss_free:
            scores = torch.sigmoid(logits)
            # The bias only chooses; gates come from the unbiased scores.
            _, chosen = torch.topk(scores + self.expert_bias, self.top_k, dim=-1)
        else:
            scores = torch.softmax(logits, dim=-1)
            _, chosen = torch.topk(scores, self.top_k, dim=-1)
        gates = scores.gather(-1, chosen)
        gates = gates / gates.sum(dim=-1, keepdim=True)
        return chosen, gates, scores

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])  # (N, C)
        chosen, gates, scores = self.route(tokens)
        flat = chosen.reshape(-1)  # (N*k,) expert of each token-expert pair
        counts = torch.bincount(flat, minlength=self.num_experts)
        # Stable: within an expert the pairs keep token order, so results do not depend on
        # how the sort breaks ties.
        order = torch.argsort(flat, stable=True)
        token_of_pair = order // self.top_k
        expert_out = self.experts(tokens[token_of_pair], counts)  # (N*k, C), grouped by expert
        weighted = expert_out * gates.reshape(-1)[order, None].to(expert_out.dtype)
        out = torch.zeros_like(tokens, dtype=expert_out.dtype).index_add_(0, token_of_pair, weighted)
        if self.shared_experts is not None:
            shared, _ = self.shared_experts(tokens)
            out = out + shared
        if self.training and not _in_backward_recompute():
            self.tokens_per_expert += counts.to(self.tokens_per_expert.dtype)
        aux = None
        if self.training and not self.loss_free and self.aux_loss_coef > 0:
            aux = self.aux_loss_coef * self.balance_loss(counts, scores)
        return out.reshape(shape), aux

    def balance_loss(self, counts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Switch Transformer's load-balancing loss, E * sum_e(f_e * P_e): f_e the fraction of
        token-expert pairs routed to e (no gradient), P_e the mean router probability of e.
        Its gradient pushes probability away from the overloaded experts; 1 when balanced."""
        fraction = counts.to(scores.dtype) / counts.sum()
        return self.num_experts * torch.sum(fraction * scores.mean(dim=0))

    @torch.no_grad()
    def update_bias(self, counts: torch.Tensor) -> None:
        """Loss-free balancing after an optimizer step, from that step's counts (E,): raise the
        bias of underloaded experts, lower it for overloaded ones, by the same fixed amount."""
        self.expert_bias += self.bias_update_rate * torch.sign(counts.mean() - counts)

    def take_counts(self) -> torch.Tensor:
        """The counts since the last call (E,), and start counting afresh."""
        counts = self.tokens_per_expert.clone()
        self.tokens_per_expert.zero_()
        return counts


def build_moe(config: ModelConfig) -> MoEFeedForward:
    """The MoE feed-forward a block uses when `use_moe` is set."""
    return MoEFeedForward(config)


def summed_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """Counts summed over data-parallel ranks, so every rank moves its bias the same way (the
    seam for DDP; a single process returns them unchanged)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        counts = counts.clone()
        dist.all_reduce(counts)
    return counts


def load_figures(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-layer load figures from counts (L, E): each expert's fraction of the token-expert
    pairs, and max-violation (max - mean) / mean. Stay on the device."""
    total = counts.sum(dim=-1, keepdim=True).clamp_min(1.0)
    fraction = counts / total
    mean = fraction.mean(dim=-1)
    violation = (fraction.max(dim=-1).values - mean) / mean
    return {"expert_load": fraction, "expert_max_violation": violation}


def expert_load_fields(extra: dict[str, list]) -> dict[str, list]:
    """The StepMetrics fields for a report window's averaged step figures (plain lists, so the
    event stays JSON): loads and max-violation per layer, and each layer's experts that got no
    token in the whole window. Empty when the model reported no expert loads."""
    if "expert_load" not in extra:
        return {}
    loads = extra["expert_load"]
    return {
        "expert_load": loads,
        "expert_max_violation": extra.get("expert_max_violation", []),
        "expert_dead": [sum(1 for load in layer if load == 0.0) for layer in loads],
    }
