"""reprobuild.verify: every check of an engine's outputs, with one public face.

- ``run``: run an engine under a plan (runs, contexts, threads, streams, processes) and judge the determinism
  tiers it reaches; ``check_against`` a pinned manifest's golden digests.
- ``records``: the plan and the report models; ``devices`` and ``fleet``: the same checks across GPUs and Ray
  workers; ``locate``: the first layer whose output diverges; ``tolerance``: outputs against a reference
  (onnxruntime) within a tolerance, for the checks that are not bitwise.
"""

from __future__ import annotations

from reprobuild.verify.fleet import FleetPlan, verify_on_ray
from reprobuild.verify.locate import locate, locate_against
from reprobuild.verify.records import AgainstResult, Dimension, Locator, VerifyPlan, VerifyReport
from reprobuild.verify.run import check_against, tier_reached, verify
from reprobuild.verify.tolerance import CompareReport, compare_outputs, onnxruntime_outputs

__all__ = ["AgainstResult", "CompareReport", "Dimension", "FleetPlan", "Locator", "VerifyPlan", "VerifyReport",
           "check_against", "compare_outputs", "locate", "locate_against", "onnxruntime_outputs", "tier_reached",
           "verify", "verify_on_ray"]
