"""LLM backends behind one interface, the one reply schema, and the on-disk response cache.

- `backend`: the interface (`LLMBackend`, `ChatRequest`, `Sample`, errors, retry timing);
- `factory`: `make_backend(name, model)`, the only importer of the backend modules;
- `openai_backend`, `anthropic_backend`, `vllm_offline`: the backends; `vllm_server`: starts a server;
- `schema`: the reply schema and its parser; `cache`: the on-disk response cache.
"""
from sept.pipeline.llm.backend import (
    BACKENDS,
    BackendError,
    ChatRequest,
    LLMBackend,
    Sample,
    TransientError,
    Usage,
    scrub,
)
from sept.pipeline.llm.cache import ResponseCache, cache_key, default_cache_dir
from sept.pipeline.llm.factory import BackendOptionError, make_backend
from sept.pipeline.llm.schema import (
    REPLY_JSON_SCHEMA,
    SCHEMA_VERSION,
    InvalidReply,
    NeighborItem,
    NeighborReply,
    parse_reply,
)

__all__ = [
    "BACKENDS", "BackendError", "BackendOptionError", "ChatRequest", "LLMBackend", "Sample", "TransientError", "Usage", "make_backend", "scrub",
    "ResponseCache", "cache_key", "default_cache_dir",
    "REPLY_JSON_SCHEMA", "SCHEMA_VERSION", "InvalidReply", "NeighborItem", "NeighborReply", "parse_reply",
]
