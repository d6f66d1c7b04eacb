"""The README's first two commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shell_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def test_ci_runs_the_readme_test_command():
    ci_lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci_lines == [shell_blocks()[1].strip()]


def test_readme_starts_with_main_job_then_tests():
    main_job, tests = shell_blocks()[:2]
    assert "edgeface demo" in main_job
    assert "python -m export dlib-resnet" in main_job
    assert "pytest" in tests
