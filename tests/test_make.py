"""Every documented make target resolves to real commands (a pattern rule on a phony target would not)."""

import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def make(*args: str) -> str:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True).stdout


DOCUMENTED = re.findall(r"^([a-zA-Z0-9_% -]+):.*## ", (REPO / "Makefile").read_text(), flags=re.M)
TARGETS = [t.replace("%", "table2") for line in DOCUMENTED for t in line.split()]


def test_help_lists_the_artefact_targets():
    listed = make("help")
    for target in ("reproduce-table2", "reproduce-figure4", "reproduce-figure7", "bench", "test", "data-lm"):
        assert target in TARGETS and target in listed


@pytest.mark.parametrize("target", TARGETS)
def test_target_has_a_recipe(target):
    out = make("-n", target)
    assert out.strip() and "Nothing to be done" not in out
