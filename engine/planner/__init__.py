"""The budget planner: a time budget becomes a sized RunConfig by measuring this machine.

calibrate.py measures training speed and memory here; shapes.py says which model shapes are
sane; sizing.py spends the budget's compute on parameters and tokens; plan.py ties them to a
config, with predictions and the reason for each choice.
"""
