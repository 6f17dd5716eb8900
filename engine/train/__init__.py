"""Training: the loop (trainer.py) and the parts it delegates to: set-up once (setup.py), one
optimizer step (step.py), the training clock (clock.py), the per-step decision (decision.py) and
its agreement across ranks (agreement.py), what a fault calls for (recovery.py), the metrics
report (metrics.py), optimizers (optimizers.py, muon.py), the LR schedule, the budget clock,
evaluation, DDP and gradient sync, fault injection. The checkpoint format it writes is
engine/runs/checkpoint.py.

Import submodules directly; this package loads nothing itself.
"""
