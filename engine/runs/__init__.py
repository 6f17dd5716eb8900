"""A run as other processes see it: its folder (run_dir.py), the events it writes (events.py),
the control channel that steers it (control_channel.py), the checkpoint format
(checkpoint.py) and opening a trained run's model (trained_run.py).

run_dir, events and control_channel are pure Python (the UI reads them without torch);
checkpoint and trained_run load torch. Import submodules directly.
"""
