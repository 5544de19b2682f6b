"""The command line: help for every command, one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import build_parser, main


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_help_lists_commands_and_each_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"synth", "run", "demo", "config", "stages"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: signmae" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "--set", "masks.unknown_field=1"], "unknown config field 'masks.unknown_"),
        (["config", "--set", "decode.size=big"], "config field 'decode.size'"),
        (["config", "--config", "no_such_config"], "unknown config 'no_such_config'"),
        (["synth", "--out", "{tmp}/out", "--classes", "0"], "--classes: Input should be greater"),
        (["synth", "--out", "{tmp}/file/sub", "--classes", "2"], "cannot create output folder"),
        (["run", "nonsense"], "unknown stage 'nonsense'"),
    ],
)
def test_bad_input_is_one_line_error_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("signmae: error: ")
    assert message in lines[0]


def test_config_prints_resolved_yaml_with_overrides() -> None:
    result = run_cli("config", "--config", "cpu_demo", "--set", "masks.dilation=3")
    assert result.returncode == 0, result.stderr
    assert "dilation: 3" in result.stdout
