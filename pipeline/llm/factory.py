"""Choosing a backend by name: `make_backend("openai" | "anthropic" | "vllm" | "vllm-offline", model)`.

Apart from `backend.py` (the interface every backend implements) so that the backend modules,
which import the interface, are imported by this module only, lazily (their SDKs are heavy),
and no module of the package imports one that imports it back.
"""
from __future__ import annotations

from typing import Any

from sept.errors import SeptError
from sept.pipeline.llm.backend import BACKENDS, LLMBackend


class BackendOptionError(SeptError, ValueError):
    """A backend name or option that `make_backend` refuses (unknown backend, a key passed as option)."""


def make_backend(backend: str, model: str, base_url: str | None = None, **options: Any) -> LLMBackend:
    """Build a backend by name.

    backend: "openai" (key from OPENAI_API_KEY), "anthropic" (ANTHROPIC_API_KEY),
    "vllm" (an OpenAI-compatible vLLM server at `base_url`; key from VLLM_API_KEY or none),
    "vllm-offline" (the in-process `vllm.LLM` engine; `model` is a path or name).
    options: timeout (seconds per request, default 120) and backend-specific engine options.
    Keys are read from the environment only; passing `api_key=` is refused so a key never
    ends up in a config file, a flow parameter or a manifest.
    """
    if "api_key" in options:
        raise BackendOptionError("API keys are read from the environment only (OPENAI_API_KEY, ANTHROPIC_API_KEY, VLLM_API_KEY)")
    if backend in ("openai", "vllm"):
        from sept.pipeline.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(model, base_url=base_url, kind=backend, **options)
    if backend == "anthropic":
        from sept.pipeline.llm.anthropic_backend import AnthropicBackend

        return AnthropicBackend(model, base_url=base_url, **options)
    if backend == "vllm-offline":
        from sept.pipeline.llm.vllm_offline import VLLMOfflineBackend

        if base_url:
            raise BackendOptionError("backend 'vllm-offline' runs in-process and takes no base_url; use backend 'vllm' for a server")
        return VLLMOfflineBackend(model, **options)
    raise BackendOptionError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
