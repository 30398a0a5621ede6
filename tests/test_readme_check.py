"""scripts/check_readme.py: its parsing and shape comparison, and that every example block of
the READMEs is either checked or says why not. (CI runs the checked blocks themselves:
``.ci/run`` calls the script after the Quick start lines.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "examples" / "flower_app" / "README.md"]


@pytest.fixture(scope="module")
def checker():
    spec = importlib.util.spec_from_file_location("check_readme", ROOT / "scripts" / "check_readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_block_is_checked_or_says_why_not(checker, readme):
    blocks = [b for b in checker.parse(readme) if b.is_example]
    assert blocks
    for b in blocks:
        assert b.mode in ("check", "skip"), f"{b.where}: no <!-- check --> / <!-- check: skip (reason) --> marker"
        assert b.mode == "check" or b.reason, f"{b.where}: skip without a reason"


def test_the_readme_checks_its_walk_through(checker):
    checked = [b for b in checker.parse(ROOT / "README.md") if b.mode == "check"]
    commands = [c.text for b in checked for c in b.commands()]
    for needed in ("edge-sdk hw list", "edge-sdk cluster", "edge-sdk simulate", "edge-sdk extract", "edge-sdk export"):
        assert any(c.startswith(needed) for c in commands), needed
    assert all(c.expected for b in checked for c in b.commands()), "a checked $ command shows no output"


def test_quick_start_is_two_lines_and_not_run_twice(checker):
    text = (ROOT / "README.md").read_text()
    body = text.split("<!-- quickstart:begin -->")[1].split("<!-- quickstart:end -->")[0]
    lines = [l for l in body.splitlines() if l.strip() and not l.startswith("```")]
    assert lines == ['pip install -e ".[dev]" -c constraints.txt && edge-sdk profile', "pytest"]
    block = next(b for b in checker.parse(ROOT / "README.md") if "edge-sdk profile" in "\n".join(b.body))
    assert block.mode == "skip"
    # the first screen: what it is for, the diagram, the Quick start
    assert text.index("docs/flow.png") < text.index("<!-- quickstart:begin -->") < 3000


def test_commands_join_continuations_and_collect_output(checker, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- check -->\n```\n$ edge-sdk simulate --a 1 \\\n    --b 2\nround 1/5  loss 1.0\n"
                      "size  acc\n----  ---\n1     0.2\n\n$ echo hi\nhi\n```\n")
    (block,) = checker.parse(readme)
    first, second = block.commands()
    assert first.text == "edge-sdk simulate --a 1 --b 2"
    assert first.expected[0].startswith("round 1/5") and second.expected == ["hi"]


def test_shape_compares_headers_and_first_words_not_numbers(checker):
    shown = ["device 780ff (measured)", "  cpu  AMD EPYC", "", "size  kept  params", "----  ----  ------",
             "1     1.00  12,202", "capacity  score 192"]
    run = ["device abc (measured)", "  cpu  Cortex-A72", "warning: contended", "size  kept   params",
           "----  -----  ------", "1/4   0.25  3,050", "capacity  score 57"]
    assert checker.compare(shown, run) == []
    assert checker.compare(shown, run[:2] + run[3:6])  # no capacity line
    assert checker.compare(["a  b", "--  --"], ["a  c", "--  --"])  # another header
    assert checker.compare(["cpu x", "device y"], ["device y", "cpu x"])  # order matters
