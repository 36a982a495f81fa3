"""KvTensor -> torch.Tensor, with no copy."""

from ._kvpager import KvTensor


def to_torch(view: KvTensor):
    """A torch tensor over the same memory as ``view``: same shape, strides and dtype.

    float8 views go through DLPack as uint8 and are reinterpreted with ``Tensor.view(dtype)``,
    so they work with torch versions whose DLPack import lacks the float8 codes; a torch
    without the float8 dtype at all raises TypeError. The tensor keeps the KV space alive
    (through the DLPack capsule's deleter) for as long as it exists.
    """
    import torch

    if view.dtype.startswith("float8"):
        target = getattr(torch, view.dtype, None)
        if target is None:
            raise TypeError(f"torch {torch.__version__} has no {view.dtype}")
        return torch.from_dlpack(view.with_dtype("uint8")).view(target)
    return torch.from_dlpack(view)
