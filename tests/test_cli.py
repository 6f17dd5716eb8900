"""The headless command line: output and one-sentence errors, never a traceback."""

import io
import json
import subprocess
import sys

from engine.cli import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_presets_lists_each_with_its_purpose():
    code, out, _ = run_cli("presets")
    assert code == 0
    for name in ("tiny", "small", "base", "laptop"):
        assert f"\n{name} " in "\n" + out


def test_inspect_shows_size_and_memory():
    code, out, _ = run_cli("inspect", "--preset", "tiny")
    assert code == 0
    assert "parameters        192,704" in out
    assert "training memory" in out and "config ok" in out


def test_inspect_json_and_set():
    code, out, _ = run_cli("inspect", "--preset", "tiny", "--set", "model.num_layers=2", "--json")
    data = json.loads(out)
    assert code == 0 and data["parameters"] > 192_704 and data["problems"] == []


def test_inspect_reports_invalid_config_and_fails():
    code, out, _ = run_cli("inspect", "--preset", "tiny", "--set", "model.num_heads=7")
    assert code == 2
    assert "model.num_heads = 7: num_dims (64) must be divisible by num_heads" in out


def test_bad_inputs_give_one_sentence(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nlerning_rate = 1\n")
    cases = [
        (("inspect", "--preset", "nope"), "no preset named 'nope'"),
        (("inspect", "--config", str(tmp_path / "missing.toml")), "no such file"),
        (("inspect", "--config", str(bad)), "did you mean train.learning_rate?"),
        (("inspect", "--set", "batch_size=lots"), "expected an integer"),
    ]
    for argv, expected in cases:
        code, _, err = run_cli(*argv)
        assert code == 2 and expected in err and "Traceback" not in err, argv


def test_console_script_runs_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "lightlm_tui", "inspect", "--preset", "nope"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "no preset named 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_check_reports_every_part_of_the_machine(tmp_path):
    code, out, _ = run_cli("check", "--json", "--runs-dir", str(tmp_path))
    report = json.loads(out)
    names = [c["name"] for c in report["checks"]]
    assert code == 0 and {"python", "torch", "cpu", "ram", "disk"} <= set(names)
    assert any(n.startswith("gpu") for n in names)
    assert all(c["status"] in {"ok", "warn", "fail"} and c["sentence"].endswith(".") for c in report["checks"])
    code, text, _ = run_cli("check", "--runs-dir", str(tmp_path))
    assert "cpu" in text and "RAM available" in text


def test_help_lists_every_command_and_each_has_its_own_help():
    from engine.cli.parser import build_parser

    result = subprocess.run([sys.executable, "-m", "lightlm_tui", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"train", "resume", "monitor", "compare", "export", "check", "plan", "control"} <= set(commands)
    for name in commands:
        assert f"\n    {name} " in result.stdout, f"`lightlm-tui --help` does not list {name}"
        shown = subprocess.run([sys.executable, "-m", "lightlm_tui", name, "--help"], capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0 and shown.stdout.startswith(f"usage: lightlm-tui {name}"), name
