"""Validation whose cost is bounded by the schema, not by the document: what manifests and engine headers use.

pydantic reports every error it finds, and a list of a million empty objects has a million entries with ten
missing fields each: a 300 KB manifest once took 850 MB and printed 170 MB of errors. Here

- every list and dict is :data:`FailFastList` / :data:`FailFastDict`: its validation stops at its first bad
  entry (pydantic's ``FailFast``);
- :class:`BoundedModel` refuses an object with more keys than its model has fields before looking at any of them
  (one error, not one per unknown key);

so a document has at most a few errors per field of the schema, and :func:`validation_summary` lists the first
few of those and counts the rest.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ValidationError, model_validator
from pydantic.types import FailFast

from reprobuild.core.textformat import error_lines, printable

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")



class _FailFast(FailFast):
    """pydantic's ``FailFast``, hashable, so that a union may hold a fail-fast list (``int | FailFastList[int]``)."""

    def __hash__(self) -> int:
        return hash(type(self))


#: A list whose validation stops at the first entry that fails.
FailFastList = Annotated[list[T], _FailFast()]
#: A dict whose validation stops at the first entry that fails.
FailFastDict = Annotated[dict[K, V], _FailFast()]


class BoundedModel(BaseModel):
    """A model that refuses an object with more keys than it has fields, with one error that names a few."""

    @model_validator(mode="before")
    @classmethod
    def _no_more_keys_than_fields(cls, data: Any) -> Any:
        fields = cls.model_fields
        if isinstance(data, dict) and len(data) > len(fields):
            unknown = [k for k in data if k not in fields]
            shown = ", ".join(printable(repr(k))[:40] for k in unknown[:3])
            raise ValueError(f"{len(data)} keys where a {cls.__name__} has at most {len(fields)} fields: "
                             f"{len(unknown)} unknown, such as {shown}")
        return data


def validation_summary(exc: ValidationError) -> str:
    """The first errors of ``exc`` as ``location: message`` lines and a count of the rest; no input values."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return error_lines(errors, exc.error_count())
