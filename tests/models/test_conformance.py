"""ONNX conformance on the CPU backend, the acceptance bar of the op coverage: ONNX's node suite, the nine light
models (weights re-randomized, onnxruntime as reference, logits before the final Softmax compared too) and the
pytorch-converted/pytorch-operator models. Nothing may give a wrong result or an untyped exception, and
``docs/conformance.md`` must be what the command generates today."""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor

import pytest

from reprobuild.cli.conformance import markdown_header
from reprobuild.conformance import Result, load_suite, run_case
from reprobuild.conformance.report import summary_counts, to_markdown
from tests.helpers import REPO

DOC = os.path.join(REPO, "docs", "conformance.md")
#: The acceptance bar (issue 8): node suite >= 1200 of 1884, every light model, >= 100 of 117 pytorch cases.
MIN_PASS = {"node": 1200, "light": 9, "pytorch": 100}


@pytest.fixture(scope="module")
def results() -> list[Result]:
    cases = [c for suite in ("node", "light", "pytorch") for c in load_suite(suite)]
    with ProcessPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(run_case, cases, chunksize=8))


@pytest.mark.slow
def test_no_case_gives_a_wrong_result_or_an_untyped_error(results: list[Result]) -> None:
    bad = [f"{r.suite}:{r.case}: {r.result}: {r.detail[:300]}" for r in results if r.result in ("fail", "error")]
    assert not bad, "\n".join(bad)


@pytest.mark.slow
@pytest.mark.parametrize("suite", sorted(MIN_PASS))
def test_enough_cases_pass(results: list[Result], suite: str) -> None:
    counts = summary_counts(results)[suite]
    assert counts["pass"] >= MIN_PASS[suite], counts


@pytest.mark.slow
def test_docs_conformance_is_what_the_command_generates(results: list[Result]) -> None:
    header = markdown_header()
    fresh = to_markdown(results, header)
    if os.environ.get("REPROBUILD_REGENERATE_DOCS"):
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(fresh)
    with open(DOC, encoding="utf-8") as f:
        committed = f.read()
    versions = re.search(r"^Versions: .*$", committed, re.M)
    if versions is None or versions.group(0) not in header:
        pytest.skip(f"docs/conformance.md was generated with other versions ({versions.group(0) if versions else '?'}"
                    f"); the suites and the reference differ with them")
    assert committed == fresh, ("docs/conformance.md is stale: regenerate it with reprobuild conformance --format "
                                "markdown --output docs/conformance.md (or REPROBUILD_REGENERATE_DOCS=1 pytest)")
