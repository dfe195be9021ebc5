"""The one reply schema every LLM backend must produce, and the parser that judges a raw reply.

A reply is valid when it parses as JSON (optionally inside a Markdown code fence), matches
`NeighborReply`, was not cut off by the token limit, and holds at least one neighbor. Anything
else is an `InvalidReply` with a short machine-readable reason, so the caller can ask again and
keep the reason for review.
"""
from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from sept.errors import SeptError

# Bump when the schema or the parsing rules change: cached replies from an older schema are
# then never reused (the version is part of every cache key).
SCHEMA_VERSION = "neighbor-reply/1"

ITEM_KINDS = ("synonym", "paraphrase", "acoustic", "subtype", "other")


class NeighborItem(BaseModel):
    """One proposed neighbor. Empty text is allowed by the schema and rejected item by item
    later, so one bad item does not throw away a whole reply."""

    text: str
    kind: Literal["synonym", "paraphrase", "acoustic", "subtype", "other"] = "other"

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        # Models invent kinds ("onomatopoeia", "Synonym"); the item is still useful.
        if isinstance(value, str):
            value = value.strip().lower()
            return value if value in ITEM_KINDS else "other"
        return "other" if value is None else value


class NeighborReply(BaseModel):
    """The whole reply: a non-empty list of neighbors of one class."""

    neighbors: list[NeighborItem] = Field(min_length=1)


# Written out by hand rather than taken from `NeighborReply.model_json_schema()`: OpenAI's strict
# structured output needs every property required and `additionalProperties: false`, and the
# same strict form keeps vLLM's guided decoding and Anthropic's tool input tight.
REPLY_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "neighbors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "kind": {"type": "string", "enum": list(ITEM_KINDS)},
                },
                "required": ["text", "kind"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["neighbors"],
    "additionalProperties": False,
}
SCHEMA_NAME = "neighbor_reply"


class InvalidReply(SeptError, ValueError):
    """A reply that does not satisfy the schema; `reason` is one of
    truncated, refusal, empty, not_json, wrong_shape, empty_list."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*$", re.DOTALL)


def strip_fence(text: str) -> str:
    """The content of a ```json ... ``` fenced block, or the text unchanged.

    Chat models wrap JSON in a fence even when told not to; the content is what was asked for,
    so a fenced reply counts as valid.
    """
    m = _FENCE.match(text)
    return m.group(1) if m else text


def parse_reply(raw: str | None, finish_reason: str | None = None, refusal: str | None = None) -> NeighborReply:
    """Judge one raw reply; return it parsed or raise `InvalidReply`."""
    if refusal:
        raise InvalidReply("refusal", refusal[:200])
    if finish_reason in ("length", "max_tokens"):
        raise InvalidReply("truncated", f"finish_reason={finish_reason}")
    if raw is None or not raw.strip():
        raise InvalidReply("empty", "no content")
    body = strip_fence(raw).strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise InvalidReply("not_json", f"{e.msg} at char {e.pos}") from None
    if isinstance(data, dict) and isinstance(data.get("neighbors"), list) and not data["neighbors"]:
        raise InvalidReply("empty_list", "neighbors is []")
    try:
        return NeighborReply.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise InvalidReply("wrong_shape", f"{where}: {first['msg']}") from None
