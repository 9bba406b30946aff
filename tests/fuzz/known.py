"""Failures the campaign reproduces that issue 20 lists and other branches fix (``i20-*``), by what they look like.

The CI test (``test_fuzz.py``) fails on any failure not in this table; a run whose every failure is in it is an
expected failure that names them (pytest's ``xfail``: visible, never silent). Once those branches are merged,
empty ``KNOWN``: the test then demands a campaign without any failure, which is issue 20's acceptance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Known:
    finding: str  #: the issue's words for it
    result: str  #: "untyped", "unbounded", "silent", "crash"
    pattern: str  #: searched in "KIND at WHERE: MESSAGE"
    targets: tuple[str, ...] = ()  #: the only targets it may come from (none named: any)

    def matches(self, failure: dict[str, Any]) -> bool:
        text = f"{failure['kind']} at {failure['where']}: {failure['message']}"
        return (failure["result"] == self.result and failure["target"] in (self.targets or (failure["target"],))
                and re.search(self.pattern, text, re.DOTALL) is not None)


KNOWN: tuple[Known, ...] = ()


def known(failure: dict[str, Any]) -> Known | None:
    return next((k for k in KNOWN if k.matches(failure)), None)
