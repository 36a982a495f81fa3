"""Each package's __all__ names exactly what ``from package import *`` gives, with no engine
installed (transformers, vLLM): every name is there and star-importing does not fail."""

import importlib

import pytest

PACKAGES = ["kvpager", "kvpager.integrations.policy", "kvpager.integrations.transformers",
            "kvpager.integrations.vllm"]


@pytest.mark.parametrize("name", PACKAGES)
def test_star_import_gives_exactly_all(name):
    module = importlib.import_module(name)
    namespace: dict = {}
    exec(f"from {name} import *", namespace)  # the statement under test
    namespace.pop("__builtins__", None)
    assert sorted(namespace) == sorted(module.__all__)
