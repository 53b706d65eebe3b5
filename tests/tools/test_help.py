"""Every command-line tool (tools/*.py, projects/*/run_demo.py) prints its whole description
on --help, and parses its arguments before torch or detectron2 is imported."""

import argparse
import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from ..helpers import REPO

TOOLS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "tools", "*.py"))
    + glob.glob(os.path.join(REPO, "projects", "*", "run_demo.py"))
)

# Runs the tool as `python TOOL --help` does, in this interpreter, then reports what got imported.
PROBE = """
import json, runpy, sys
path = sys.argv[1]
sys.argv = [path, "--help"]
code = None
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "detectron2", "d2ext._C") if m in sys.modules)
print("PROBE" + json.dumps({"code": code, "heavy": heavy}))
"""


def _first_paragraph(path: str) -> str:
    with open(os.path.join(REPO, path)) as f:
        doc = ast.get_docstring(ast.parse(f.read()), clean=True)
    assert doc, f"{path} has no module docstring"
    return " ".join(doc.split("\n\n")[0].split())


def test_every_tool_is_covered():
    assert "tools/train_net.py" in TOOLS and "tools/convert_mae.py" in TOOLS
    assert len([t for t in TOOLS if t.endswith("run_demo.py")]) == 5


@pytest.mark.parametrize("tool", TOOLS)
def test_help_prints_the_whole_description(tool):
    run = subprocess.run(
        [sys.executable, tool, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    printed = " ".join(run.stdout.split())
    assert printed.startswith("usage:"), run.stdout[:200]
    assert _first_paragraph(tool) in printed, run.stdout


@pytest.mark.parametrize("tool", TOOLS)
def test_help_imports_no_torch(tool):
    run = subprocess.run(
        [sys.executable, "-c", PROBE, tool],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    line = [x for x in run.stdout.splitlines() if x.startswith("PROBE")]
    assert line, run.stdout[-500:] + run.stderr[-2000:]
    result = json.loads(line[-1][len("PROBE") :])
    assert result["code"] in (0, None), result
    assert result["heavy"] == [], f"{tool} --help imported {result['heavy']}"


def _describe(parser: argparse.ArgumentParser) -> list[tuple]:
    return [
        (type(a).__name__, tuple(a.option_strings), a.dest, a.default, a.type, a.nargs, a.help,
         a.metavar, a.required)
        for a in parser._actions
    ]  # fmt: skip


def test_train_net_parser_is_detectron2s():
    """The torch-free parser has detectron2's options, and parses a command line alike."""
    from detectron2.engine import default_argument_parser

    from d2ext.engine.train_loop import argument_parser
    from d2ext.utils.arguments import default_argument_parser as ours

    assert _describe(ours()) == _describe(default_argument_parser())
    assert ours().epilog == default_argument_parser().epilog
    argv = ["--config-file", "c.py", "--num-gpus", "2", "--resume", "train.max_iter=3", "a=b"]
    assert vars(argument_parser().parse_args(argv)) == vars(
        default_argument_parser().parse_args(argv)
    )
