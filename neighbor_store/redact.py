"""Keep secrets out of everything the store writes (manifests, JSONL, margin metadata).

Two nets: keys that name a credential (`api_key`, `token`, `authorization`, ...) have their
value replaced, and any string containing the value of a credential-looking environment
variable (`*_API_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`) has that value replaced.
"""
from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "<redacted>"

_SECRET_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_SECRET_KEY = re.compile(
    r"^(.*[_-])?(api[_-]?key|apikey|token|access[_-]?token|auth[_-]?token|secret|client[_-]?secret|password|passwd|"
    r"authorization|credentials?|bearer)$",
    re.IGNORECASE,
)
# short values ("1", "true") would redact innocent text everywhere
_MIN_SECRET_LEN = 6


def is_secret_key(key: str) -> bool:
    """True for a parameter name that holds a credential (`api_key`, `OPENAI_API_KEY`, `token`), not `max_tokens`."""
    return bool(_SECRET_KEY.match(key))


def environment_secrets() -> list[str]:
    """Values of environment variables whose names look like credentials, longest first."""
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v.strip()) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    """`text` with every environment secret value replaced by `<redacted>`."""
    for s in environment_secrets() if secrets is None else secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


def scrub(obj: Any, secrets: list[str] | None = None) -> Any:
    """A deep copy of a JSON-like `obj` with credential keys and environment secret values redacted."""
    secrets = environment_secrets() if secrets is None else secrets
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            k = str(k)
            out[k] = REDACTED if is_secret_key(k) and v not in (None, "") else scrub(v, secrets)
        return out
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj, secrets)
    return obj


def contains_secret(text: str, secrets: list[str] | None = None) -> bool:
    """True when `text` holds an environment secret value."""
    return any(s in text for s in (environment_secrets() if secrets is None else secrets))
