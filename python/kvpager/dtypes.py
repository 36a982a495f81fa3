"""Dtype names: torch, numpy and string spellings of the element types KV tensors support."""

from ._kvpager import dtype_info


def dtype_name(dtype) -> str:
    """Canonical kvpager name ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
    "float32", "int8", "uint8") of a torch.dtype, a numpy dtype (or scalar type) or a string
    (aliases such as "fp16", "half", "bf16", "fp8" are accepted).

    Raises kvpager.InvalidArgument (a ValueError) for any other type.
    """
    if isinstance(dtype, str):
        name = dtype
    elif type(dtype).__module__.startswith("torch"):
        name = str(dtype).split(".", 1)[-1]  # "torch.float16" -> "float16"
    else:
        import numpy

        try:
            name = numpy.dtype(dtype).name
        except TypeError as exc:
            raise ValueError(f"not a dtype: {dtype!r}") from exc
    return dtype_info(name.lower())[0]


def dtype_itemsize(dtype) -> int:
    """Bytes of one element of ``dtype`` (any spelling dtype_name accepts)."""
    return dtype_info(dtype_name(dtype))[1]
