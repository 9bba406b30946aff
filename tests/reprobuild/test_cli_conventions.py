"""Command-line conventions (issue 11): no argparse prefix matching, and build progress that shows once per layer
with --verbose and in logs (off a terminal) without it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reprobuild.cli.build import CliProgress
from reprobuild.cli.main import main
from tests.helpers import EXAMPLES

MLP = f"{EXAMPLES}/mlp.onnx"


def test_an_abbreviated_option_is_refused_not_matched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`compare ... --input x=...` was silently read as `--inputs` (prefix matching); now every parser refuses an
    abbreviation of a longer option."""
    engine = tmp_path / "mlp.engine"
    assert main(["build", MLP, "-o", str(engine), "-q"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["run", str(engine), "--see", "0"])  # a prefix of --seed
    assert exit_.value.code == 2
    assert "unrecognized arguments: --see" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["build", MLP, "-o", str(tmp_path / "x.engine"), "--verb"])  # a prefix of --verbose
    assert exit_.value.code == 2


def test_build_verbose_prints_each_layer_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", MLP, "-o", str(tmp_path / "mlp.engine"), "-v"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if re.search(r"\[1/\d+\] fc1 ", line)]
    assert len(lines) == 1, err


def test_progress_off_a_terminal_prints_lines_for_logs(capsys: pytest.CaptureFixture[str]) -> None:
    progress = CliProgress(verbose=False, interval=3600.0)
    progress.tty = False  # as in CI logs
    progress.phase_start("tactic selection", None, 25)
    for step in range(25):
        progress.step_complete("tactic selection", step, f"layer {step}")
    progress.phase_finish("tactic selection")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "tactic selection: 25 layers"
    # every tenth of the way (every 2 layers of 25) and the last one
    assert [line.split(";")[0] for line in lines[1:]] == [f"tactic selection: {n}/25 layers"
                                                          for n in (*range(2, 25, 2), 25)]


def test_progress_off_a_terminal_also_prints_every_few_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    progress = CliProgress(verbose=False, interval=0.0)  # every step is past the interval
    progress.tty = False
    progress.phase_start("tactic selection", None, 1000)
    for step in range(3):
        progress.step_complete("tactic selection", step, f"layer {step}")
    assert len(capsys.readouterr().err.splitlines()) == 1 + 3
