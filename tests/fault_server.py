"""A STAND-IN server, for fault injection only: it speaks just enough of the OpenAI chat
completions API (`POST /v1/chat/completions`) and of the Anthropic Messages API
(`POST /v1/messages`) to return, on demand, what a real server will not produce when asked:
429 with Retry-After, 500, garbage bodies, fenced or truncated JSON, refusals, slow replies.

It is not a model. Every "valid" reply is made up from the class name. Behaviour is scripted
per class (found in the user message with `class_pattern`) or globally, one action per request:

    server.script("dog", [{"status": 429, "retry_after": 1}, "ok"])

Actions: "ok", "fenced", "truncated", "garbage" (non-JSON HTTP body), "not_json" (a chat reply
whose content is prose), "wrong_shape", "empty_list", "refusal", "bad_items" (a valid reply with
unusable items), "no_tool" (Anthropic: text instead of a tool call), {"status": <code>,
"retry_after": <s>, "echo_key": bool}, {"delay": <s>} (then "ok").
When a class's script is used up, `default` applies. `latency` delays every reply.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# the first `class "<name>"` of the user message: how every bundled generation prompt names its class
DEFAULT_CLASS_PATTERN = r'\bclass "(.*?)"'


def valid_reply(class_name: str, serial: int, items: int = 4) -> dict:
    kinds = ["synonym", "paraphrase", "acoustic", "subtype"]
    return {"neighbors": [{"text": f"{class_name} sound variant {serial}-{i}", "kind": kinds[i % 4]}
                          for i in range(items)]}


class FaultServer:
    """Start with `start()`, stop with `stop()`; `base_url` ends in /v1 (OpenAI clients),
    `anthropic_base_url` is the bare host (the Anthropic client appends /v1/messages)."""

    def __init__(self, latency: float = 0.0, default: Any = "ok", class_pattern: str = DEFAULT_CLASS_PATTERN,
                 items: int = 4):
        self.latency = latency
        self.default = default
        self.items = items
        self.class_pattern = re.compile(class_pattern)
        self._scripts: dict[str | None, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._serial = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._in_flight = 0
        self._last_credential = None
        self.max_in_flight = 0

    # -- scripting -------------------------------------------------------------------------
    def script(self, class_name: str | None, actions: list[Any]) -> None:
        """Queue actions for requests about `class_name` (None: requests of any class)."""
        with self._lock:
            self._scripts[class_name].extend(actions)

    def reset(self, latency: float | None = None, default: Any = None) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
            self.max_in_flight = 0
            if latency is not None:
                self.latency = latency
            if default is not None:
                self.default = default

    @property
    def count(self) -> int:
        return len(self.requests)

    def count_for(self, class_name: str) -> int:
        return sum(1 for r in self.requests if r["class"] == class_name)

    def _next_action(self, class_name: str | None) -> tuple[Any, int]:
        with self._lock:
            self._serial += 1
            for key in (class_name, None):
                if key in self._scripts and self._scripts[key]:
                    return self._scripts[key].popleft(), self._serial
            return self.default, self._serial

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FaultServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                server._handle(self)

            def do_GET(self):  # /stats: counters for a client in another process
                payload = json.dumps({"count": server.count, "max_in_flight": server.max_in_flight}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- request handling ------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        body = json.loads(h.rfile.read(length) or b"{}")
        anthropic = h.path.rstrip("/").endswith("/messages")
        messages = body.get("messages", [])
        user = next((m.get("content") for m in messages if m.get("role") == "user"), "") or ""
        if isinstance(user, list):
            user = " ".join(part.get("text", "") for part in user if isinstance(part, dict))
        m = self.class_pattern.search(user)
        class_name = m.group(1) if m else None
        action, serial = self._next_action(class_name)
        with self._lock:
            self.requests.append({"path": h.path, "class": class_name, "body": body, "time": time.monotonic(),
                                  "action": action, "authorization": h.headers.get("authorization"),
                                  "x-api-key": h.headers.get("x-api-key")})
            self._last_credential = h.headers.get("authorization") or h.headers.get("x-api-key")
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            delay = self.latency + (action.get("delay", 0.0) if isinstance(action, dict) else 0.0)
            if delay:
                time.sleep(delay)
            status, headers, payload = self._respond(action, serial, class_name or "thing", body, anthropic)
        finally:
            with self._lock:
                self._in_flight -= 1
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("content-length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and went away; that is the point of a slow reply

    def _respond(self, action: Any, serial: int, class_name: str, body: dict, anthropic: bool
                 ) -> tuple[int, dict, bytes]:
        js = {"content-type": "application/json"}
        if isinstance(action, dict) and "status" in action:
            headers = dict(js)
            if action.get("retry_after") is not None:
                headers["retry-after"] = str(action["retry_after"])
            message = f"stand-in error {action['status']}"
            if action.get("echo_key"):
                # like a careless proxy: the error body repeats the credential it was sent
                message += f" for credential {self._last_credential}"
            err = {"error": {"message": message, "type": "stand_in"}}
            if anthropic:
                err = {"type": "error", "error": {"type": "rate_limit_error" if action["status"] == 429
                                                  else "api_error", "message": f"stand-in error {action['status']}"}}
            return action["status"], headers, json.dumps(err).encode()
        if action == "garbage":
            return 200, {"content-type": "application/json"}, b"<html>502 Bad Gateway</html> \x00 not json"
        if isinstance(action, dict):
            action = "ok"

        n = int(body.get("n") or 1)
        contents = []
        for i in range(n):
            reply = valid_reply(class_name, serial * 100 + i, self.items)
            text, finish, refusal = json.dumps(reply), "stop", None
            if action == "fenced":
                text = "```json\n" + json.dumps(reply, indent=1) + "\n```"
            elif action == "truncated":
                text, finish = json.dumps(reply)[:37], "length"
            elif action == "not_json":
                text = f"Here are some neighbors of {class_name}: barking, woofing."
            elif action == "wrong_shape":
                text = json.dumps({"items": ["a", "b"]})
            elif action == "empty_list":
                text = json.dumps({"neighbors": []})
            elif action == "refusal":
                text, refusal = None, "I cannot help with that."
            elif action == "bad_items":
                text = json.dumps({"neighbors": [{"text": "  ", "kind": "synonym"}, {"text": class_name, "kind": "other"},
                                                 {"text": "x" * 300, "kind": "other"},
                                                 {"text": f"good {class_name} neighbor", "kind": "Acoustic"}]})
            contents.append((reply, text, finish, refusal))

        if anthropic:
            reply, text, finish, refusal = contents[0]
            if action == "no_tool":
                content = [{"type": "text", "text": "Sure! dog sounds: woof."}]
                stop = "end_turn"
            elif action == "truncated":
                content = [{"type": "text", "text": text}]
                stop = "max_tokens"
            elif action == "refusal":
                content = [{"type": "text", "text": "I cannot help with that."}]
                stop = "refusal"
            else:
                tool = (body.get("tool_choice") or {}).get("name", "record_neighbors")
                payload_input = reply if action in ("ok", "fenced") else {"items": []}
                content = [{"type": "tool_use", "id": f"toolu_{serial}", "name": tool, "input": payload_input}]
                stop = "tool_use"
            msg = {"id": f"msg_{serial}", "type": "message", "role": "assistant", "model": body.get("model", "stand-in"),
                   "content": content, "stop_reason": stop, "stop_sequence": None,
                   "usage": {"input_tokens": 10, "output_tokens": 10}}
            return 200, js, json.dumps(msg).encode()

        choices = [{"index": i, "finish_reason": finish,
                    "message": {"role": "assistant", "content": text, "refusal": refusal}}
                   for i, (_, text, finish, refusal) in enumerate(contents)]
        completion = {"id": f"chatcmpl-{serial}", "object": "chat.completion", "created": int(time.time()),
                      "model": body.get("model", "stand-in"), "choices": choices,
                      "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
        return 200, js, json.dumps(completion).encode()


def main() -> None:
    """Run the stand-in in its own process (benchmarks: keeps it off the client's GIL); prints
    its base URL, serves until killed."""
    import argparse

    ap = argparse.ArgumentParser(description="stand-in OpenAI-compatible server for fault injection and benchmarks")
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--items", type=int, default=4)
    args = ap.parse_args()
    server = FaultServer(latency=args.latency, items=args.items).start()
    print(server.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
