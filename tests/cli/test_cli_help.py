"""`lenet --help` and every `lenet COMMAND --help` answer without importing torch (or numpy,
matplotlib, tqdm): the parser is built from torch-free modules, the work is imported by
the command that runs it."""

import json
import subprocess
import sys

PROBE = """
import contextlib, io, json, sys
from lenet.cli import build_parser

parser = build_parser()
commands = sorted(parser._subparsers._group_actions[0].choices)
for argv in [["--help"], *([c, "--help"] for c in commands)]:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        parser.parse_args(argv)
    assert "usage: lenet" in out.getvalue(), argv
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "numpy", "matplotlib", "tqdm"})
print(json.dumps({"commands": commands, "heavy": heavy}))
"""


def test_help_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"train", "resume", "summary", "predict", "serve", "sweep"} <= set(report["commands"])
    assert report["heavy"] == [], report
