"""OpenAI chat completions, and any OpenAI-compatible server such as vLLM's, with structured output.

The reply schema goes in `response_format` as a strict JSON schema; `n` samples come back from
one request. The SDK's own retries are off (`max_retries=0`): `pipeline.generate` owns the
retry policy so every request is counted and every wait honours Retry-After.
"""
from __future__ import annotations

import os
from typing import Any

from sept.pipeline.llm.backend import (
    BackendError,
    ChatRequest,
    HTTPBackend,
    Sample,
    TransientError,
    Usage,
    classify_sdk_error,
)
from sept.pipeline.llm.schema import REPLY_JSON_SCHEMA, SCHEMA_NAME


def _tokens(usage, field: str) -> int | None:
    value = getattr(usage, field, None)
    return value if isinstance(value, int) and value >= 0 else None


def _classify(e: Exception) -> Exception:
    import openai

    return classify_sdk_error(e, openai)


class OpenAIBackend(HTTPBackend):
    """kind "openai": api.openai.com (or `base_url`), key from OPENAI_API_KEY.
    kind "vllm": a vLLM OpenAI-compatible server at `base_url`, key from VLLM_API_KEY if set."""

    supports_n = True

    def __init__(self, model: str, base_url: str | None = None, kind: str = "openai", timeout: float = 120.0,
                 strict: bool = True):
        self.kind = kind
        super().__init__(model)
        if kind == "vllm":
            if not base_url:
                raise ValueError("backend 'vllm' needs base_url, e.g. http://127.0.0.1:8000/v1")
            self._key_env = "VLLM_API_KEY"
        elif kind == "openai":
            self._key_env = "OPENAI_API_KEY"
            if not os.environ.get(self._key_env):
                raise BackendError("backend 'openai' needs the environment variable OPENAI_API_KEY")
        else:
            raise ValueError(f"OpenAIBackend kind must be 'openai' or 'vllm', not {kind!r}")
        self.base_url = base_url
        self.timeout = float(timeout)
        self.strict = strict
        # The SDK builds hundreds of pydantic models on first use; pay that here, not inside
        # the first request of a run.
        from openai.types.chat import ChatCompletion  # noqa: F401

    def _make_client(self):
        import openai

        return openai.AsyncOpenAI(
            api_key=os.environ.get(self._key_env) or "EMPTY",
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,
        )

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": request.system},
                {"role": "user", "content": request.user},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": REPLY_JSON_SCHEMA, "strict": self.strict},
            },
            "temperature": request.temperature,
            "n": request.n,
        }
        # OpenAI's newer models refuse `max_tokens`; vLLM accepts both names.
        params["max_completion_tokens" if self.kind == "openai" else "max_tokens"] = request.max_tokens
        if request.seed is not None:
            params["seed"] = request.seed
        return params

    async def complete_with_usage(self, request: ChatRequest) -> tuple[list[Sample], Usage]:
        from openai.types.chat import ChatCompletion

        client = self._client()
        try:
            # `chat.completions.create` first walks the whole body against its TypedDicts (about
            # 10 ms of CPU per request for this schema); the body is already plain JSON, so post it.
            completion = await client.post("/chat/completions", body=self._params(request), cast_to=ChatCompletion)
        except Exception as e:  # noqa: BLE001 - every failure is classified, nothing is swallowed
            mapped = _classify(e)
            if mapped is e:
                raise
            raise mapped from None
        try:
            choices = sorted(completion.choices, key=lambda c: c.index)
            samples = [
                Sample(text=c.message.content, finish_reason=c.finish_reason,
                       refusal=getattr(c.message, "refusal", None))
                for c in choices
            ]
            # vLLM's server fills `usage` as OpenAI does; a server that leaves it out costs "unreported"
            usage = getattr(completion, "usage", None)
            return samples, Usage(_tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"))
        except (AttributeError, TypeError) as e:
            # JSON, but not a chat completion (a proxy's error page, a broken server)
            raise TransientError(f"bad_response: not a chat completion ({type(e).__name__})") from None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model}


