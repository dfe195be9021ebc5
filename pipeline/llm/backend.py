"""The interface every LLM backend implements and its error types (`make_backend` is in `factory`).

A backend does one thing: send one chat request and hand back the raw replies. It never
retries by itself (the SDKs' own retries are switched off) and never parses: the retry policy
and the schema check live in `pipeline.generate`, so every request is counted in one place.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from sept.errors import SeptError

BACKENDS = ("openai", "anthropic", "vllm", "vllm-offline")

# Environment variables that may hold secrets; their values are scrubbed from every message.
SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "VLLM_API_KEY")
_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|sk-ant-[A-Za-z0-9_\-]{6,})")


def scrub(text: str) -> str:
    """`text` with API keys replaced by `***`: error bodies from servers can echo the key."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _KEY_PATTERN.sub("***", text)


@dataclass(frozen=True)
class ChatRequest:
    """One chat request: a system and a user message, and the sampling parameters."""

    system: str
    user: str
    temperature: float = 0.8
    max_tokens: int = 512
    n: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class Sample:
    """One raw reply as the backend returned it; judged later by `schema.parse_reply`."""

    text: str | None
    finish_reason: str | None = None
    refusal: str | None = None


@dataclass(frozen=True)
class Usage:
    """Tokens of one request as the API reported them (its usage fields); None where it did not."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def reported(self) -> bool:
        return self.prompt_tokens is not None or self.completion_tokens is not None


class BackendError(SeptError, RuntimeError):
    """A request failed in a way that asking again will not fix (bad key, unknown model, 400)."""


class TransientError(RuntimeError):
    """A request failed in a way that may pass on a later try (429, 5xx, timeout, connection).

    `retry_after` is the server's Retry-After in seconds when it sent one.
    """

    def __init__(self, reason: str, retry_after: float | None = None):
        self.reason = reason
        self.retry_after = retry_after
        super().__init__(reason)


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` / `Retry-After` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
    except Exception:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LLMBackend:
    """Base class of the backends.

    kind: "openai" | "anthropic" | "vllm" | "vllm-offline"; model: model name or path.
    supports_n: one request can return several samples (`ChatRequest.n > 1`).
    """

    kind: str = ""
    supports_n: bool = False

    def __init__(self, model: str):
        if not model:
            raise ValueError(f"backend {self.kind!r}: parameter 'model' must be a non-empty model name")
        self.model = model

    async def complete(self, request: ChatRequest) -> list[Sample]:
        """Send one request; return `request.n` samples (1 if not `supports_n`).

        Raises TransientError (worth retrying) or BackendError (not worth retrying).
        """
        samples, _ = await self.complete_with_usage(request)
        return samples

    async def complete_with_usage(self, request: ChatRequest) -> tuple[list[Sample], Usage]:
        """`complete`, plus the tokens the API reported for this request (what it cost)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Provenance for manifests and records; never holds a key or a host."""
        return {"backend": self.kind, "model": self.model}

    async def aclose(self) -> None:
        """Release what belongs to the running event loop (HTTP connections). The backend stays
        usable; `generate_all` calls this when its run ends."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


def classify_sdk_error(e: Exception, sdk: Any) -> Exception:
    """Map an exception of the `openai` or `anthropic` SDK (same exception hierarchy) to
    TransientError (retry) or BackendError (don't), scrubbed of keys; others pass through."""
    if isinstance(e, sdk.APITimeoutError):
        return TransientError("timeout")
    if isinstance(e, sdk.APIConnectionError):
        return TransientError(scrub(f"connection_error: {e}"))
    if isinstance(e, sdk.APIStatusError):
        status = e.status_code
        detail = scrub(str(e.message))[:300]
        # 408/409/429 and every 5xx (Anthropic's "overloaded" is 529) are worth another try
        if status in (408, 409, 429) or status >= 500:
            return TransientError(f"http_{status}: {detail}", parse_retry_after(e.response.headers))
        return BackendError(f"http_{status}: {detail}")
    if isinstance(e, sdk.APIResponseValidationError):
        return TransientError(scrub(f"bad_response: {e}")[:300])
    if isinstance(e, json.JSONDecodeError):
        # a body that is not JSON at all (garbage from a proxy or a broken server)
        return TransientError(f"bad_response: body is not JSON ({e.msg})")
    return e


class HTTPBackend(LLMBackend):
    """A backend that talks to an HTTP API through an async SDK client.

    An async client belongs to the event loop it was made on, and flows may call asyncio.run()
    once per class: a new loop gets a new client. Loops are compared by identity, not id(),
    which a new loop may reuse from a closed one.
    """

    def __init__(self, model: str):
        super().__init__(model)
        self._loop = self._http = None

    def _make_client(self):
        """A new SDK client for the running loop (SDK retries off: the retry policy is ours)."""
        raise NotImplementedError

    def _client(self):
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            self._loop, self._http = loop, self._make_client()
        return self._http

    def __getstate__(self) -> dict[str, Any]:
        # picklable for process pools and task result storage; clients are per process and loop
        return {**self.__dict__, "_loop": None, "_http": None}

    async def aclose(self) -> None:
        """Close this event loop's client; the backend stays usable (a new client is made on
        the next request). A client of a loop that is already closed is simply dropped."""
        client, loop = self._http, self._loop
        self._loop = self._http = None
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if client is not None and loop is current:
            await client.close()
