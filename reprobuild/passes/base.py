"""What a graph pass is (name, version, function, summary): a module of its own, so that the list of every pass
(``_pass_list``) and the package that serves it (``reprobuild.passes``) both import it, and not each other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reprobuild.ir import Network


@dataclass(frozen=True)
class Pass:
    name: str
    version: int
    run: Callable[[Network], Network]
    summary: str
