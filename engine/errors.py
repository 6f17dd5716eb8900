"""The base of every engine error whose message is written for the user.

Front ends (the CLI, the TUI) show such an error as its one sentence; any other exception is
a bug and keeps its traceback. Torch-free, so front ends can catch it before torch loads.
"""


class UserFacingError(ValueError):
    """Something the user can fix; str(error) says what and how."""
