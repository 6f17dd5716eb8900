"""The suite itself: every test checks something, so none can pass by doing nothing."""

import ast
from pathlib import Path

TESTS = Path(__file__).parent
# pytest's own checks; torch.testing.assert_close and friends are caught by their "assert" prefix.
PYTEST_CHECKS = {"raises", "warns", "deprecated_call", "fail"}


def is_test(node: ast.AST) -> bool:
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")


def called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def helpers_that_check(trees: list[ast.Module]) -> set[str]:
    """Helper functions under tests/ that assert (tui_helpers.wait_for fails the test on a timeout)."""
    return {
        node.name
        for tree in trees
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_test(node)
        and any(isinstance(inner, ast.Assert) for inner in ast.walk(node))
    }


def checks_something(test: ast.AST, helpers: set[str]) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Assert):
            return True
        if isinstance(node, ast.Call):
            name = called_name(node)
            if name in PYTEST_CHECKS or name.startswith("assert") or name in helpers:
                return True
    return False


def test_every_test_asserts_or_expects_an_exception():
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(TESTS.glob("*.py"))}
    helpers = helpers_that_check(list(trees.values()))
    assert "wait_for" in helpers  # the scan sees through the pilot helper
    unchecked = [
        f"{path.name}::{node.name}"
        for path, tree in trees.items() if path.name.startswith("test_")
        for node in ast.walk(tree) if is_test(node) and not checks_something(node, helpers)
    ]
    assert not unchecked, f"tests with no assert, pytest.raises or checking helper: {unchecked}"


def test_the_scan_flags_a_test_that_checks_nothing():
    tree = ast.parse("def test_runs():\n    work()\n\nasync def test_waits(pilot):\n    await pilot.pause()\n")
    assert [checks_something(node, {"wait_for"}) for node in tree.body] == [False, False]
    tree = ast.parse("def test_a():\n    assert 1\n\ndef test_b():\n    with pytest.raises(E):\n        f()\n\n"
                     "def test_c():\n    torch.testing.assert_close(a, b)\n\nasync def test_d(p):\n"
                     "    await wait_for(lambda: True, p)\n")
    assert [checks_something(node, {"wait_for"}) for node in tree.body] == [True, True, True, True]
