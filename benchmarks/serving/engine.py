"""One transformers continuous-batching engine, on stock memory or on kvpager memory.

``Engine(model, memory="stock")`` is transformers as shipped: its PagedAttentionCache allocates
every KV block up front. ``Engine(model, memory="kvpager", layout=..., instance=...)`` builds the
same manager with kvpager.integrations.transformers enabled while the cache is created, so the
KV tensors are kvpager virtual memory mapped only for blocks in use. Everything else (model,
scheduler, kernels, configuration) is identical, which is what the benchmarks compare.

Not thread-safe: one driver thread submits; transformers' own thread generates.
"""

import contextlib
import gc
from typing import Optional


def _cb_config(num_blocks: int, block_size: int, max_batch_tokens: int, allow_block_sharing: bool,
               use_cuda_graph: Optional[bool], cpu_offload_gib: float = 0.0):
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    # cpu_offload_gib > 0: preempted requests swap their KV to a pinned host pool and come back
    # whole; 0 (transformers' default): they are recomputed (soft reset)
    return ContinuousBatchingConfig(
        block_size=block_size,
        num_blocks=num_blocks,
        max_batch_tokens=max_batch_tokens,
        allow_block_sharing=allow_block_sharing,
        use_cuda_graph=use_cuda_graph,
        cpu_offload_space=cpu_offload_gib,
    )


class Engine:
    """A started ContinuousBatchingManager; ``close()`` stops it and frees its memory."""

    def __init__(self, model, *, memory: str = "stock", num_blocks: int, block_size: int = 32,
                 max_batch_tokens: int = 1024, layout: Optional[str] = None,
                 instance: Optional[str] = None, model_name: str = "",
                 reserve_pages: Optional[int] = None, max_idle_pages: Optional[int] = None,
                 limit_bytes: Optional[int] = None, guarantee_bytes: Optional[int] = None,
                 allow_block_sharing: bool = False, cpu_offload_gib: float = 0.0,
                 use_cuda_graph: Optional[bool] = None):
        from transformers import GenerationConfig

        if memory not in ("stock", "kvpager"):
            raise ValueError(f"memory {memory!r} is not 'stock' or 'kvpager'")
        self.memory = memory
        self.model = model
        generation = GenerationConfig(do_sample=False, eos_token_id=-1, pad_token_id=0,
                                      max_new_tokens=16)
        cb = _cb_config(num_blocks, block_size, max_batch_tokens, allow_block_sharing,
                        use_cuda_graph, cpu_offload_gib)
        if memory == "kvpager":
            from kvpager.integrations import transformers as kvt

            context = kvt.kvpager_cache(layout=layout, instance=instance, model=model_name,
                                        reserve_pages=reserve_pages,
                                        max_idle_pages=max_idle_pages, limit_bytes=limit_bytes,
                                        guarantee_bytes=guarantee_bytes)
        else:
            context = contextlib.nullcontext()
        with context:
            self.manager = model.init_continuous_batching(generation_config=generation,
                                                          continuous_batching_config=cb)
            self.manager.warmup()  # creates the cache (inside the kvpager scope) and graphs
        self.cache = self.manager.batch_processor.cache
        self.manager.start()

    @property
    def kv(self):
        """The kvpager.KvCache (None for stock)."""
        return getattr(self.cache, "kv", None)

    def kv_bytes(self) -> int:
        """Physical KV memory held now: mapped pages and the page pool's ready handles (kvpager:
        what the device budget charges it) or the allocated tensors (stock)."""
        if self.kv is not None:
            st = self.kv.stats()
            return st["mapped_bytes"] + st["pool"]["ready_bytes"]
        return sum(t.numel() * t.element_size() for t in self.cache.key_cache + self.cache.value_cache)

    def submit(self, request_id: str, prompt, max_new_tokens: int) -> None:
        self.manager.add_request(prompt, request_id=request_id, max_new_tokens=max_new_tokens,
                                 record_timestamps=True)

    def next_result(self, timeout: float):
        """A finished GenerationOutput, or None after ``timeout`` seconds."""
        while True:
            result = self.manager.get_result(timeout=timeout)
            if result is None or result.is_finished():
                return result

    def close(self) -> None:
        import torch

        manager, self.manager = self.manager, None
        if manager is None:
            return
        manager.stop(block=True, timeout=60)
        manager.destroy()
        if not manager.is_running():  # its thread reads batch_processor until it stops
            manager.batch_processor = None
        self.cache = None
        del manager
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
