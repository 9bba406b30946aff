"""Names from files never reach the terminal raw: a model whose tensor and layer names hold terminal escape
sequences (clear the screen, colour, a right-to-left override) is built, inspected, diffed, verified and run,
and nothing printed holds an escape or a format character, only their escaped forms
(``reprobuild.core.textformat.printable``)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper

from reprobuild.core.textformat import printable, table
from tests.helpers import make_model, run_cli

CLEAR = "\x1b[2J\x1b[H"
RED = "\x1b[31m"
RTL = "\u202e"
INPUT, HIDDEN, OUTPUT = f"x{CLEAR}", f"h{RTL}gnp.exe", f"y{RED}"
LAYER = f"transpose{CLEAR}"


def _raw(text: str) -> list[str]:
    """The non-printable characters in ``text`` other than line breaks."""
    return sorted({c for c in text if not c.isprintable() and c not in "\n"})


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("escapes")
    nodes = [helper.make_node("Transpose", [INPUT], [HIDDEN], name=LAYER, perm=[1, 0]),
             helper.make_node("Softmax", [HIDDEN], [OUTPUT], name=f"soft{RTL}", axis=1)]
    onnx.save(make_model(nodes, {INPUT: (2, 3)}, [OUTPUT]), directory / "m.onnx")
    path = directory / "m.engine"
    assert run_cli_quiet(["build", str(directory / "m.onnx"), "-o", str(path), "--backend", "cpu", "-v"])
    return path


def run_cli_quiet(argv: list[str]) -> bool:
    from reprobuild.cli.main import main

    return main(argv) == 0


def test_printable_escapes_controls_and_format_characters_only() -> None:
    assert printable("plain name, ünïcödé 名前") == "plain name, ünïcödé 名前"
    assert printable(f"a{CLEAR}b{RTL}c\x9b") == "a\\x1b[2J\\x1b[Hb\\u202ec\\x9b"
    assert printable("two\nlines\x07", keep_newlines=True) == "two\nlines\\x07"
    assert table([[f"x{RED}", "1"]], ["name", "n"]) == "name       n\n---------  -\nx\\x1b[31m  1"


@pytest.mark.parametrize("argv", [["inspect"], ["run", "--seed", "0"], ["verify", "--runs", "2", "--seed", "0"],
                                  ["bench", "--iterations", "2", "--warmup", "0"]])
def test_commands_print_names_escaped(engine: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, argv[0], str(engine), *argv[1:])
    assert code == 0, err
    assert _raw(out + err) == [], (out + err)[:2000]
    if argv[0] == "inspect":
        assert "transpose\\x1b[2J\\x1b[H" in out and "soft\\u202e" in out and "y\\x1b[31m" in out


def test_diff_text_and_markdown_escape_names(engine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.onnx"
    nodes = [helper.make_node("Transpose", [INPUT], [HIDDEN], name=f"renamed{RED}", perm=[1, 0]),
             helper.make_node("Softmax", [HIDDEN], [OUTPUT], name=f"soft{RTL}", axis=1)]
    onnx.save(make_model(nodes, {INPUT: (2, 3)}, [OUTPUT]), other)
    assert run_cli_quiet(["build", str(other), "-o", str(tmp_path / "other.engine"), "--backend", "cpu", "-q"])
    capsys.readouterr()
    for fmt in ("text", "markdown"):
        code, out, err = run_cli(capsys, "diff", str(engine), str(tmp_path / "other.engine"), "--format", fmt)
        assert code == 1, err
        assert _raw(out + err) == [], out
        assert "renamed\\x1b[31m" in out


def test_error_messages_quoting_names_are_escaped(engine: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "run", str(engine), "--input", f"{INPUT}=missing.npy")
    assert code == 2, err
    assert _raw(out + err) == [], err
    code, out, err = run_cli(capsys, "run", str(engine), "--input", f"nowhere{RED}=x.npy")
    assert code == 7 and _raw(out + err) == [] and "x\\x1b[2J\\x1b[H" in err, err
