"""Anthropic Messages API with forced tool use: the reply schema is the tool's input schema,
so the model must answer by "calling" the tool with a JSON object of that shape.

No `n`: several samples are several requests. SDK retries are off; see `pipeline.generate`.
"""
from __future__ import annotations

import functools
import inspect
import json
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
from sept.pipeline.llm.schema import REPLY_JSON_SCHEMA

TOOL_NAME = "record_neighbors"


def _classify(e: Exception) -> Exception:
    import anthropic

    return classify_sdk_error(e, anthropic)


@functools.cache
def _takes_temperature_of(create) -> bool:
    return "temperature" in inspect.signature(create).parameters


def _takes_temperature(client) -> bool:
    return _takes_temperature_of(type(client.messages).create)


class AnthropicBackend(HTTPBackend):
    """kind "anthropic": key from ANTHROPIC_API_KEY; `base_url` for a proxy or gateway."""

    kind = "anthropic"
    supports_n = False

    def __init__(self, model: str, base_url: str | None = None, timeout: float = 120.0):
        super().__init__(model)
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise BackendError("backend 'anthropic' needs the environment variable ANTHROPIC_API_KEY")
        self.base_url = base_url
        self.timeout = float(timeout)
        from anthropic.types import Message  # noqa: F401 - SDK models built now, not in the first request

    def _make_client(self):
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=os.environ["ANTHROPIC_API_KEY"],
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,
        )

    async def complete_with_usage(self, request: ChatRequest) -> tuple[list[Sample], Usage]:
        if request.n != 1:
            raise ValueError("backend 'anthropic' returns one sample per request (n=1)")
        client = self._client()
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "system": request.system,
            "messages": [{"role": "user", "content": request.user}],
            "tools": [{
                "name": TOOL_NAME,
                "description": "Record the semantic neighbors of the audio class.",
                "input_schema": REPLY_JSON_SCHEMA,
            }],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        }
        # Recent SDK releases dropped sampling parameters from `messages.create`; pass the
        # temperature only where the installed SDK still takes it.
        if _takes_temperature(client):
            params["temperature"] = request.temperature
        try:
            message = await client.messages.create(**params)
        except Exception as e:  # noqa: BLE001 - every failure is classified, nothing is swallowed
            mapped = _classify(e)
            if mapped is e:
                raise
            raise mapped from None
        try:
            stop = message.stop_reason
            blocks = list(message.content)
        except (AttributeError, TypeError) as e:
            raise TransientError(f"bad_response: not a Messages API reply ({type(e).__name__})") from None
        return self._samples(stop, blocks), _usage(getattr(message, "usage", None))

    def _samples(self, stop, blocks) -> list[Sample]:
        for block in blocks:
            if getattr(block, "type", None) == "tool_use" and getattr(block, "name", None) == TOOL_NAME:
                return [Sample(text=json.dumps(block.input, ensure_ascii=False), finish_reason=stop)]
        text = "".join(getattr(b, "text", "") or "" for b in blocks)
        if stop == "refusal":
            return [Sample(text=None, finish_reason=stop, refusal=text or "refused")]
        # No tool call: judge whatever text came back (it may still be JSON, or a refusal in prose).
        return [Sample(text=text or None, finish_reason=stop)]


def _usage(usage) -> Usage:
    """Anthropic's input tokens: uncached plus those written to and read from its prompt cache."""
    def count(field: str) -> int | None:
        value = getattr(usage, field, None)
        return value if isinstance(value, int) and value >= 0 else None

    parts = [count(f) for f in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")]
    prompt = None if parts[0] is None else sum(p or 0 for p in parts)
    return Usage(prompt, count("output_tokens"))


