"""This machine: the compute device and precision (device.py), the hardware check (hardware.py),
performance counters and peaks (perf.py), and where files outside a run live (paths.py).

Import submodules directly; this package loads nothing itself.
"""
