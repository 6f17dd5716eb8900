"""Shared by the pilot tests: wait for the app to reach a state, without fixed sleeps."""

import asyncio

from textual.css.query import NoMatches


async def wait_for(condition, pilot, timeout: float = 120.0) -> None:
    """Let the app run until `condition()` is true; fail the test after `timeout` seconds.
    A query that matches nothing yet (a screen still mounting) counts as not yet true."""
    deadline = asyncio.get_running_loop().time() + timeout

    def holds() -> bool:
        try:
            return bool(condition())
        except NoMatches:
            return False

    while not holds():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the screen"
        await pilot.pause(0.05)
