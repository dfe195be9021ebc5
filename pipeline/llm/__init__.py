"""LLM backends behind one interface, the one reply schema, and the on-disk response cache."""
from sept.pipeline.llm.backend import (
    BACKENDS,
    BackendError,
    ChatRequest,
    LLMBackend,
    Sample,
    TransientError,
    Usage,
    make_backend,
    scrub,
)
from sept.pipeline.llm.cache import ResponseCache, cache_key, default_cache_dir
from sept.pipeline.llm.schema import (
    REPLY_JSON_SCHEMA,
    SCHEMA_VERSION,
    InvalidReply,
    NeighborItem,
    NeighborReply,
    parse_reply,
)

__all__ = [
    "BACKENDS", "BackendError", "ChatRequest", "LLMBackend", "Sample", "TransientError", "Usage", "make_backend", "scrub",
    "ResponseCache", "cache_key", "default_cache_dir",
    "REPLY_JSON_SCHEMA", "SCHEMA_VERSION", "InvalidReply", "NeighborItem", "NeighborReply", "parse_reply",
]
