"""Plug-ins that connect kvpager to serving engines.

Each engine gets its own module here (transformers' continuous batching first, see
shared/DESIGN.md); the engine-neutral, kvcached-compatible entry points live in
``kvpager.engine`` and are re-exported from ``kvpager``.
"""
