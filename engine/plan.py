"""The engine header: what the runtime needs to run a built network, validated strictly on load."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reprobuild.dtypes import DTYPES

EngineAttr = int | float | str | list[int] | list[float] | list[str]
Sha256 = Field(pattern=r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EngineTactic(_Strict):
    family: str
    name: str
    version: int = Field(ge=1)
    source_sha256: str = Sha256
    parameters: dict[str, int | str]


class EngineTensor(_Strict):
    name: str
    shape: list[int]
    dtype: str

    def model_post_init(self, __context: object) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r} has unsupported dtype {self.dtype!r}")
        if any(d < 0 for d in self.shape):
            raise ValueError(f"tensor {self.name!r} has a negative dimension {self.shape}")


class EngineWeight(EngineTensor):
    offset: int = Field(ge=0)
    nbytes: int = Field(ge=0)
    sha256: str = Sha256


class EnginePinnedInput(EngineTensor):
    """A network input whose value was fixed at build time; the value is the weight of the same name."""

    sha256: str = Sha256


class EngineLayer(_Strict):
    name: str
    op: str
    attrs: dict[str, EngineAttr]
    inputs: list[str]
    outputs: list[str]
    tactic: EngineTactic
    workspace_bytes: int = Field(ge=0)


class EngineMemory(_Strict):
    alignment: int = Field(ge=1)
    activation_bytes: int = Field(ge=0)
    workspace_offset: int = Field(ge=0)
    workspace_bytes: int = Field(ge=0)
    library_bytes: int = Field(ge=0)
    offsets: dict[str, int]


class EngineHeader(_Strict):
    format: Literal["reprobuild-engine"]
    backend: Literal["cpu", "cuda"]
    name: str
    inputs: list[EngineTensor]
    pinned_inputs: list[EnginePinnedInput]
    outputs: list[EngineTensor]
    activations: list[EngineTensor]
    layers: list[EngineLayer]
    weights: list[EngineWeight]
    memory: EngineMemory
    buffer_nbytes: int = Field(ge=0)
    #: Whether contexts capture their run into a CUDA graph by default (the build asked for it and every chosen
    #: tactic is capturable).
    cuda_graph: bool
    manifest: bytes
    manifest_sha256: str = Sha256
