"""Inputs from other frameworks (NumPy, CuPy, torch, DLPack, the array interfaces) and outputs as device arrays or
torch tensors, without host copies where the backend can read the memory in place."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from reprobuild.builder import Builder, BuilderConfig
from reprobuild.core.errors import InputError, UsageError
from reprobuild.engine import Engine, Runtime
from reprobuild.frontend import network_from_onnx_path
from tests.helpers import BACKENDS, CUDA_SKIP, EXAMPLES, to_host


def _engine(backend: str) -> Engine:
    network, _ = network_from_onnx_path(f"{EXAMPLES}/mlp.onnx")
    return Runtime().deserialize_engine(
        Builder().build(network, BuilderConfig(backend=backend, iterations=1, warmup=0)).engine)


@pytest.fixture(scope="module")
def cpu_engine() -> Engine:
    return _engine("cpu")


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((8, 64)).astype(np.float32)


class DLPackOnly:
    """An array known only through the DLPack protocol (as a framework other than NumPy would hand it over)."""

    def __init__(self, array: np.ndarray, device: tuple[int, int] = (1, 0)) -> None:
        self._array, self._device = array, device

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self._array.__dlpack__()

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._device


class ArrayInterfaceOnly:
    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.__array_interface__ = array.__array_interface__


def test_dlpack_and_array_interface_inputs_give_the_numpy_bits(cpu_engine: Engine) -> None:
    context = cpu_engine.create_execution_context()
    x = _x(1)
    expected = context.execute({"input": x})["probs"]
    for wrapped in (DLPackOnly(x), ArrayInterfaceOnly(x)):
        assert context.execute({"input": wrapped})["probs"].tobytes() == expected.tobytes()


def test_a_cpu_dlpack_input_is_shared_not_copied(cpu_engine: Engine) -> None:
    from reprobuild.engine.interop import to_backend

    x = _x(2)
    shared = to_backend(DLPackOnly(x), cpu_engine.backend, "input")
    assert shared.ctypes.data == x.ctypes.data


@pytest.mark.parametrize("value, expected", [
    ([[1.0] * 64] * 8, "is a list, which reprobuild cannot read: it is not an array"),
    (DLPackOnly(np.zeros((8, 64), np.float32), device=(2, 0)), "on GPU 0, but this engine runs on the cpu backend"),
    (DLPackOnly(np.zeros((8, 64), np.float32), device=(4, 0)), "DLPack device type 4"),
])
def test_what_cannot_be_read_is_an_input_error_naming_the_input(cpu_engine: Engine, value: Any,
                                                                 expected: str) -> None:
    with pytest.raises(InputError, match="input 'input'") as error:
        cpu_engine.create_execution_context().execute({"input": value})
    assert expected in str(error.value)


class NeedsGrad:
    """As a torch CUDA tensor that requires grad: asking for its CUDA array interface raises RuntimeError."""

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad. Use var.detach()")


def test_an_interface_that_raises_is_an_input_error_with_the_fix(cpu_engine: Engine) -> None:
    with pytest.raises(InputError, match=r"input 'input' is a .*NeedsGrad.*requires grad.*tensor\.detach\(\)"):
        cpu_engine.create_execution_context().execute({"input": NeedsGrad()})


class CudaInterfaceOnly:
    """A CUDA array known only through ``__cuda_array_interface__`` (version 3), as Numba, RAPIDS or a C extension
    hand one over; nothing here reads its (made-up) pointer."""

    def __init__(self, desc: Any) -> None:
        self.__cuda_array_interface__ = desc


def test_a_cuda_array_on_a_cpu_engine_without_cupy_is_an_input_error_with_the_fix(cpu_engine: Engine,
                                                                                  monkeypatch: Any) -> None:
    """Issue 20: on an install without CuPy this was an untyped ModuleNotFoundError (exit 1)."""
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # ``import cupy`` fails, as where CuPy is not installed
    gpu_array = CudaInterfaceOnly({"shape": (8, 64), "typestr": "<f4", "data": (0x7F0000000000, False),
                                   "version": 3, "stream": 1})
    with pytest.raises(InputError, match=r"input 'input' is a .*CudaInterfaceOnly on a GPU \(CuPy is not "
                                         r"installed to tell which\), but this engine runs on the cpu backend; "
                                         r"give a host array .* or build the engine with --backend cuda"):
        cpu_engine.create_execution_context().execute({"input": gpu_array})


@pytest.mark.parametrize("desc, expected", [
    ("not a dict", "is not a dictionary with a 'data' entry"),
    ({"shape": (8, 64), "typestr": "<f4", "version": 3}, "is not a dictionary with a 'data' entry"),
])
def test_a_malformed_cuda_array_interface_is_an_input_error(cpu_engine: Engine, desc: Any, expected: str) -> None:
    with pytest.raises(InputError, match=r"input 'input' is a .*CudaInterfaceOnly, which reprobuild cannot read") \
            as error:
        cpu_engine.create_execution_context().execute({"input": CudaInterfaceOnly(desc)})
    assert expected in str(error.value)


def test_a_shape_or_dtype_mismatch_through_dlpack_is_still_refused(cpu_engine: Engine) -> None:
    context = cpu_engine.create_execution_context()
    with pytest.raises(InputError, match=r"has shape \[4, 64\]"):
        context.execute({"input": DLPackOnly(_x(3)[:4])})
    with pytest.raises(InputError, match="has dtype float64"):
        context.execute({"input": DLPackOnly(_x(3).astype(np.float64))})


@pytest.mark.parametrize("backend", BACKENDS)
def test_device_outputs_are_owned_copies_with_the_same_bits(backend: str) -> None:
    engine = _engine(backend)
    context = engine.create_execution_context()
    x = _x(4)
    host = context.execute({"input": x})["probs"]
    device = context.execute({"input": x}, outputs="device")["probs"]
    assert isinstance(device, engine.backend.xp.ndarray)
    assert to_host(device).tobytes() == host.tobytes()
    context.execute({"input": _x(5)})  # the next run reuses the context's memory, not the caller's copy
    assert to_host(device).tobytes() == host.tobytes()


def test_an_unknown_output_form_is_a_usage_error(cpu_engine: Engine) -> None:
    with pytest.raises(UsageError, match="'numpy', 'device', 'torch'"):
        cpu_engine.create_execution_context().execute({"input": _x(6)}, outputs="cupy")


def test_enqueue_outputs_live_at_the_tensor_address(cpu_engine: Engine) -> None:
    context = cpu_engine.create_execution_context()
    out = context.enqueue({"input": _x(7)})["probs"]
    assert out.ctypes.data == context.get_tensor_address("probs")
    assert context.get_tensor_address("input") != context.get_tensor_address("probs")
    with pytest.raises(UsageError, match="not an input or output"):
        context.get_tensor_address("no_such_tensor")


def test_device_memory_may_be_any_array_like(cpu_engine: Engine) -> None:
    context = cpu_engine.create_execution_context_without_device_memory()
    arena = np.zeros(cpu_engine.device_memory_size, dtype=np.uint8)
    with pytest.raises(UsageError, match="writable"):  # NumPy marks what it imports through DLPack read-only
        context.device_memory = DLPackOnly(arena)
    context.device_memory = ArrayInterfaceOnly(arena)
    out = context.enqueue({"input": _x(8)})["probs"]
    assert arena.ctypes.data <= out.ctypes.data < arena.ctypes.data + arena.nbytes


# --- torch, where it is installed (the GPU host has it) -------------------------------------------------------------

def _torch() -> Any:
    return pytest.importorskip("torch")  # imported inside the tests: CI has no torch


def test_torch_cpu_tensors_in_and_out(cpu_engine: Engine) -> None:
    torch_ = _torch()
    x = _x(9)
    context = cpu_engine.create_execution_context()
    expected = context.execute({"input": x})["probs"]
    out = context.execute({"input": torch_.from_numpy(x)}, outputs="torch")["probs"]
    assert isinstance(out, torch_.Tensor) and out.numpy().tobytes() == expected.tobytes()
    with pytest.raises(InputError, match="detach"):
        context.execute({"input": torch_.from_numpy(x).requires_grad_()})


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_SKIP is not None, reason=f"no CUDA: {CUDA_SKIP}")
def test_torch_cuda_tensors_are_shared_with_the_engine_not_copied_through_the_host() -> None:
    """The README's torch example: a torch CUDA tensor in, torch CUDA tensors out, no host copy; the pointers
    show that the memory is shared."""
    torch_ = _torch()
    import cupy

    from reprobuild.engine.interop import to_backend

    engine = _engine("cuda")
    context = engine.create_execution_context()
    x = _x(10)
    expected = context.execute({"input": x})["probs"]
    tensor = torch_.from_numpy(x).cuda()
    with engine.backend.activate(context.stream):
        viewed = to_backend(tensor, engine.backend, "input")
    assert isinstance(viewed, cupy.ndarray) and int(viewed.data.ptr) == tensor.data_ptr()

    out = context.execute({"input": tensor}, outputs="torch")["probs"]
    assert out.is_cuda and out.cpu().numpy().tobytes() == expected.tobytes()

    buffers = context.enqueue({"input": tensor})
    shared = torch_.from_dlpack(buffers["probs"])
    assert shared.data_ptr() == context.get_tensor_address("probs")
    context.synchronize()
    assert shared.cpu().numpy().tobytes() == expected.tobytes()

    if torch_.cuda.device_count() > 1:
        with pytest.raises(InputError, match="on GPU 1, but this engine runs on GPU 0"):
            context.execute({"input": tensor.to("cuda:1")})
