"""The `cost` entries of a generated version's manifest: what its generation cost, per backend.

    {"backend": "vllm", "model": "tiny", "requests": 12, "retries": 1, "response_cache_hits": 3,
     "prompt_tokens": 2345, "completion_tokens": 678, "usage_unreported": 0, "wall_seconds": 4.2}

Tokens are the API's own usage figures; `usage_unreported` counts replies that came without them.
"""
from __future__ import annotations

from typing import Any


def format_cost(cost: dict[str, Any]) -> str:
    """One line: "vllm tiny: 12 requests (1 retries), 3 response cache hits, 2345 prompt + 678 completion tokens, 4.2 s"."""
    tokens = f"{cost.get('prompt_tokens', 0)} prompt + {cost.get('completion_tokens', 0)} completion tokens"
    if cost.get("usage_unreported"):
        tokens += f" ({cost['usage_unreported']} request(s) without usage)"
    wall = cost.get("wall_seconds")
    line = (f"{cost.get('backend')} {cost.get('model')}: {cost.get('requests', 0)} requests "
            f"({cost.get('retries', 0)} retries), {cost.get('response_cache_hits', 0)} response cache hits, "
            f"{tokens}, " + (f"{wall:.1f} s" if isinstance(wall, (int, float)) else "wall time unknown"))
    if cost.get("classes_not_run"):
        line += f"; {cost['classes_not_run']} class(es) from the task cache"
    return line
