"""ONNX conformance: build and run every case of the suites the ``onnx`` wheel ships, compare with the expected
outputs, and report which ops and dtypes work (``reprobuild conformance``)."""

from __future__ import annotations

from reprobuild.conformance.cases import SUITES, Case, load_suite
from reprobuild.conformance.runner import RESULTS, Result, run_case

__all__ = ["RESULTS", "SUITES", "Case", "Result", "load_suite", "run_case"]
