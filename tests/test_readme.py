"""The README's two set-up commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    return re.findall(r"```(?:sh|bash)\n(.+?)\n```", head, flags=re.S)


def test_readme_opens_with_two_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert all("pip install" in c for c in cmds)


def test_ci_runs_both_readme_commands_verbatim_tests_last():
    main_cmd, test_cmd = (c.strip() for c in readme_commands())
    assert "pmmc-ray run" in main_cmd and "pytest" in test_cmd
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert main_cmd in ci
    assert ci[-1] == test_cmd  # the test runner's summary is the last thing CI prints
