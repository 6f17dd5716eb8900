"""Training: the loop (trainer.py) and the parts it delegates to: one optimizer step (step.py),
the training clock (clock.py), the per-step decision (decision.py), optimizers (optimizers.py,
muon.py), the LR schedule, the budget clock, checkpoints and evaluation.

Import submodules directly; this package loads nothing itself.
"""
