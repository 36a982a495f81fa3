"""Where vLLM's attention kernels find a block: the strides of one layer's KV tensor.

vLLM gives each attention layer one tensor of the shape its backend's ``get_kv_cache_shape``
returns, e.g. ``(2, num_blocks, block_size, kv_heads, head_size)`` (FlashAttention),
``(num_blocks, kv_heads, block_size, 2 * head_size)`` (Triton, K and V side by side) or
``(num_blocks, block_size, latent)`` (MLA), laid out in memory in the order of
``get_kv_cache_stride_order``. Stock vLLM makes it a dense view of one allocation. Under kvpager
the blocks of one tensor lie ``block_stride`` bytes apart in kvpager's virtual space (the page
of the layer in the per-layer layout, the all-layer cell in the interleaved one), and each block
is dense in the backend's memory order with the block dimension taken out: a dimension the
backend orders before the blocks (FlashAttention's K/V pair) becomes the outermost one inside
the block. The kernels take every tensor's strides, so the strided view is all they need.

Pure functions, no vLLM or torch import: tested in CI from tables.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LayoutError", "attention_view", "find_block_dim"]


class LayoutError(ValueError):
    """A vLLM KV-cache shape that kvpager cannot back with its blocks."""


def find_block_dim(shape: Sequence[int], num_blocks: int) -> int:
    """The block dimension of a backend's logical shape: vLLM puts it first, or second after
    the K/V pair."""
    for d in (0, 1):
        if len(shape) > d and shape[d] == num_blocks:
            return d
    raise LayoutError(
        f"KV shape {tuple(shape)} has no {num_blocks}-block dimension first or second")


def attention_view(
    shape: Sequence[int],
    stride_order: Sequence[int],
    *,
    num_blocks: int,
    dtype_bytes: int,
    page_bytes: int,
    block_stride_bytes: int,
    blocks_per_vllm_block: int = 1,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape, strides in elements) of one layer's tensor.

    ``num_blocks``: the blocks of ``shape`` (kernel blocks: vLLM's blocks times
    ``blocks_per_vllm_block`` when the kernel's block size divides vLLM's). ``page_bytes``: one
    vLLM block of this layer. ``block_stride_bytes``: from one vLLM block to the next. Kernel
    blocks smaller than vLLM's need the vLLM blocks of a layer to be dense
    (``block_stride_bytes == page_bytes``: the per-layer layout)."""
    n = len(shape)
    if sorted(stride_order) != list(range(n)):
        raise LayoutError(f"stride order {tuple(stride_order)} is no permutation of {n} dims")
    block_dim = find_block_dim(shape, num_blocks)
    inner = [d for d in stride_order if d != block_dim]
    strides = [0] * n
    step = 1
    for d in reversed(inner):
        strides[d] = step
        step *= shape[d]
    r = blocks_per_vllm_block
    kernel_block_bytes = step * dtype_bytes
    if kernel_block_bytes * r > page_bytes:
        raise LayoutError(
            f"one block of shape {tuple(shape)} takes {kernel_block_bytes * r} bytes, more than "
            f"the {page_bytes}-byte page vLLM sized"
        )
    if r == 1:
        block_step = block_stride_bytes
    elif block_stride_bytes == page_bytes:
        block_step = page_bytes // r
    else:
        raise LayoutError(
            f"the attention kernel splits each vLLM block into {r}; its blocks are evenly spaced "
            "only in kvpager's per-layer layout (KVPAGER_LAYOUT=per-layer)"
        )
    if block_step % dtype_bytes:
        raise LayoutError(
            f"block step {block_step} is not a multiple of the {dtype_bytes}-byte dtype")
    strides[block_dim] = block_step // dtype_bytes
    return tuple(int(s) for s in shape), tuple(strides)
