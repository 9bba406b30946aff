"""ONNX's element-type numbers (``TensorProto.DataType``) and reprobuild's dtype names, without importing onnx.

The numbers are part of the ONNX file format and never change.
"""

from __future__ import annotations

from reprobuild.ops.base import OpError

ELEM_TYPES: dict[int, str] = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16", 17: "float8_e4m3fn",
    18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz", 21: "uint4", 22: "int4",
    23: "float4_e2m1fn", 24: "float8_e8m0fnu", 25: "uint2", 26: "int2",
}
UNSUPPORTED: dict[int, str] = {0: "UNDEFINED", 8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 27: "FLOAT6E2M3",
                               28: "FLOAT6E3M2"}


def dtype_of_elem_type(elem_type: int, what: str = "the tensor") -> str:
    """The dtype name of an ONNX element type; an OpError naming ``what`` for one reprobuild does not support."""
    if elem_type in ELEM_TYPES:
        return ELEM_TYPES[elem_type]
    name = UNSUPPORTED.get(elem_type, f"number {elem_type}")
    raise OpError(f"{what} has ONNX element type {name}, which reprobuild does not support (strings, complex "
                  "numbers and 6-bit floats are not supported)")
