"""Shared by the pilot tests: wait for the app to reach a state, without fixed sleeps."""

import asyncio


async def wait_for(condition, pilot, timeout: float = 120.0) -> None:
    """Let the app run until `condition()` is true; fail the test after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the screen"
        await pilot.pause(0.05)
