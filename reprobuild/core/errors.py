"""One exception hierarchy for the whole toolkit.

Every error a user can cause is a :class:`ReprobuildError` subclass whose message says what was expected, what
was found, and how to fix it. Each class carries the process exit code the CLI uses, so the table of exit codes
(``EXIT_CODES``, printed by ``reprobuild --help`` and in the README) cannot drift from the code.
"""

from __future__ import annotations


class ReprobuildError(Exception):
    """Base class of every error reprobuild raises on purpose."""

    exit_code = 1
    summary = "error"


class UsageError(ReprobuildError):
    """The command line or an API argument is wrong (a missing file, a malformed option)."""

    exit_code = 2
    summary = "usage error: a bad argument, option or path"


class ModelError(ReprobuildError):
    """The ONNX model is invalid, or uses an op, attribute, dtype or dynamic shape reprobuild does not support."""

    exit_code = 3
    summary = "model error: the ONNX model is invalid or uses something unsupported"


class UnsupportedOpError(ModelError):
    """A node uses an op (or an attribute value) that has no implementation."""


class DynamicShapeError(ModelError):
    """A tensor has a dimension that is not a fixed positive integer."""


class FormatError(ReprobuildError):
    """An engine or manifest file is unreadable, corrupted, truncated or of an unsupported version."""

    exit_code = 4
    summary = "file format error: an engine or manifest is corrupted, truncated, edited or of another version"


class ManifestEditedError(FormatError):
    """A manifest given as an engine's record (``verify --against``, ``attest --manifest``; ``diff`` says so in its
    summary) holds a pinned part other than the one the engine embeds, whose sha256 the engine records: it was
    edited after the build. The message names every field that differs."""


class BackendUnavailableError(ReprobuildError):
    """The requested backend (for example ``cuda``) cannot be used on this machine."""

    exit_code = 5
    summary = "backend unavailable: the requested backend cannot run on this machine"


class BuildError(ReprobuildError):
    """The builder could not produce an engine (no eligible tactic, workspace limit, a failing tactic)."""

    exit_code = 6
    summary = "build error: no eligible tactic, or a tactic failed"


class TacticMismatchError(BuildError):
    """An engine names a tactic this installation lacks, or whose identity (``code_sha256``) differs from the
    recorded one."""


class ReplayMismatchError(BuildError):
    """A manifest cannot be replayed on this model, config or installation; the message lists every mismatch."""

    exit_code = 8
    summary = "replay mismatch: the manifest does not match this model, build config or installed tactics"


class RefitError(ReplayMismatchError):
    """New weights, or a new model, do not fit the engine being refitted: an unknown weight name, another shape or
    dtype, a weight left unset, or a network that differs from the engine's in more than its weights."""


class PluginError(UsageError):
    """A plugin cannot be registered: its op or tactics clash with reprobuild's own or another plugin's."""


class PluginNotRegisteredError(TacticMismatchError):
    """An engine or manifest uses a plugin op whose plugin is not registered in this process."""


class EnvironmentMismatchError(BuildError):
    """The environment differs from the one a replayed manifest was built in, and the policy refuses that."""

    exit_code = 9
    summary = "environment mismatch: this machine differs from the manifest's environment (see --env-policy)"


class InputError(ReprobuildError):
    """Runtime inputs do not match the engine's bindings (name, shape or dtype)."""

    exit_code = 7
    summary = "input error: runtime inputs do not match the engine's inputs"


class NotDeterministicError(ReprobuildError):
    """Identical inputs gave different output bits (``verify``), or bits other than the golden ones."""

    exit_code = 10
    summary = "not deterministic: identical inputs gave different outputs, or outputs other than the golden ones"


class ToleranceError(ReprobuildError):
    """Outputs differ from the reference (onnxruntime) beyond the tolerance (``compare``)."""

    exit_code = 11
    summary = "outside tolerance: outputs differ from the reference beyond --atol/--rtol"


class ConformanceError(ReprobuildError):
    """A conformance case gave a wrong result or an untyped error (``reprobuild conformance``)."""

    exit_code = 12
    summary = "conformance failure: a case gave a wrong result or an untyped error"


class ResourceError(ReprobuildError):
    """An engine, model or build needs more memory than the cap (``--max-memory``, or what the device or host
    has), or more of something countable (layers, ranks, elements) than reprobuild accepts."""

    exit_code = 13
    summary = "resource limit: the work needs more memory (or larger shapes) than the cap allows, or the disk is full"


class StorageError(ResourceError):
    """A file cannot be written for lack of room: the disk or its inodes are full (ENOSPC), a quota (EDQUOT) or
    a file-size limit (EFBIG) is reached. Nothing was replaced, and no temp file is left."""


#: Process exit codes of the ``reprobuild`` command, in order. 0 is success.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "internal error: a bug in reprobuild; please report it with the command you ran"),
    *sorted(
        {(cls.exit_code, cls.summary) for cls in (
            UsageError, ModelError, FormatError, BackendUnavailableError, BuildError, InputError,
            ReplayMismatchError, EnvironmentMismatchError, NotDeterministicError, ToleranceError,
            ConformanceError, ResourceError)}
    ),
)
