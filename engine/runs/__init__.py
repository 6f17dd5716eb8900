"""A run as others see it: its folder (run_dir.py), the events it writes (events.py), the
control channel other processes use to steer it (control_channel.py) and detached runs
(detach.py). Pure Python: the UI imports all of it without loading torch.
"""
