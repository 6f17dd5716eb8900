"""Where a run executes: on the app's engine thread (engine_thread.py), as ranks under torchrun
here or on several machines (torchrun.py), or as a background process (background.py).
`engine.api.start_run` chooses among them; nothing else starts a run.

Import submodules directly; this package loads nothing itself.
"""
