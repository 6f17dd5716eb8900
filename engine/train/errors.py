"""The error a run stops with when it cannot start or go on (set-up, recovery and the loop raise it)."""

from __future__ import annotations

from engine.errors import UserFacingError


class TrainingError(UserFacingError):
    """Training cannot start or go on; the message says why and what to change."""
