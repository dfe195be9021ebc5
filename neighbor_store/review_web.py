"""`sept review DATASET@REF`: a local web page to review one version, committed through `sept store commit`'s path.

The page keeps every edit in its own draft; "commit" posts the whole draft, which is written
as a checkout (the two JSONL files a person would edit) in a private temp folder and handed to
`review.commit`, so the web and the editor produce the same records under the same validation
and the same margins rule. A validation error names the file and line of that checkout; the
page maps it back to the row at fault.

Safety: loopback by default; every /api request needs the per-launch token (header
`X-Sept-Token`, or `?token=` for images, which cannot send headers); a request whose Host or
Origin is not this server's is refused, so a page from another site, or a DNS name rebound to
127.0.0.1, cannot reach the store; versions are named only by ids looked up in this dataset's
own version list, never by a path.
"""
from __future__ import annotations

import hmac
import json
import re
import secrets
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sept.neighbor_store.errors import StoreError, ValidationError
from sept.neighbor_store.jsonl import write_jsonl
from sept.neighbor_store import Store
from sept.neighbor_store.version import NEIGHBORS, REJECTED

TOKEN_HEADER = "X-Sept-Token"
MAX_BODY = 64 << 20  # a 50-class x 1000-candidate draft is a few MB; refuse anything far beyond
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/review.js": ("review.js", "text/javascript; charset=utf-8"),
    "/review.css": ("review.css", "text/css; charset=utf-8"),
}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def _asset(name: str) -> bytes:
    return resources.files("sept.neighbor_store").joinpath("review_page", name).read_bytes()


class RequestRefused(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        self.status = status
        super().__init__(message)


class ReviewApp:
    """The review server's state and API, independent of the HTTP plumbing.

    `ref` is resolved once: the page reviews that version (and, after a commit, its child).
    """

    def __init__(self, store: Store, ref: str, token: str | None = None):
        self.store = store
        self.slug, self.version_id = store.resolve(ref)
        self.dataset = store.read(f"{self.slug}@{self.version_id}").dataset
        self.token = token or secrets.token_urlsafe(32)
        self._commit_lock = threading.Lock()

    # ---- lookup: only ids of this dataset's own versions ever reach the store -----------------

    def _version_ids(self) -> list[str]:
        return [row["id"] for row in self.store.list(self.slug)]

    def _version(self, query: dict[str, list[str]], key: str = "v"):
        vid = (query.get(key) or [self.version_id])[0]
        if not _HEX64.match(vid) or vid not in self._version_ids():
            raise RequestRefused(HTTPStatus.NOT_FOUND, f"no version {vid[:80]!r} in dataset {self.slug}")
        return self.store.read(f"{self.slug}@{vid}")

    def _latest(self) -> str:
        return self.store.resolve(f"{self.slug}@latest")[1]

    # ---- API ----------------------------------------------------------------------------------

    def version(self, query) -> dict[str, Any]:
        v = self._version(query)
        records = [r.to_json_dict() for r in v.neighbors] + [r.to_json_dict() for r in v.rejected]
        score_keys = sorted({k for r in records for k in r.get("scores", {})})
        return {
            "ref": v.ref, "id": v.id, "dataset": v.dataset, "slug": v.slug, "classes": v.classes,
            "parent": v.parent, "message": v.manifest.get("message", ""),
            "created_at": v.manifest.get("created_at"), "margins": v.manifest.get("margins", {}),
            "neighbors": [r.to_json_dict() for r in v.neighbors],
            "rejected": [r.to_json_dict() for r in v.rejected],
            "score_keys": score_keys, "latest": self._latest(),
        }

    def versions(self, query) -> dict[str, Any]:
        return {"versions": self.store.list(self.slug), "latest": self._latest()}

    def diff(self, query) -> dict[str, Any]:
        from sept.neighbor_store.diff import diff_versions, format_diff

        d = diff_versions(self._version(query, "a"), self._version(query, "b"))
        return {**d.to_json_dict(), "text": format_diff(d)}

    def plots(self, query) -> dict[str, Any]:
        from sept.neighbor_store.plot import plot_names

        return {"plots": plot_names(self._version(query))}

    def plot(self, query) -> bytes:
        from sept.neighbor_store.plot import render_plot

        v = self._version(query)
        name = (query.get("name") or [""])[0]
        try:
            return render_plot(v, name)
        except KeyError:
            raise RequestRefused(HTTPStatus.NOT_FOUND, f"no plot {name[:80]!r} for {v.ref}") from None

    def commit(self, body: dict[str, Any]) -> tuple[HTTPStatus, dict[str, Any]]:
        """Validate the page's draft as `sept store commit` does and write it as a child of `parent`."""
        from sept.neighbor_store.review import checkout, commit

        if not isinstance(body, dict):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "commit body must be a JSON object")
        parent = self._version({"v": [str(body.get("parent", ""))]})
        message = body.get("message", "")
        files = {NEIGHBORS: body.get("neighbors"), REJECTED: body.get("rejected")}
        if not isinstance(message, str):
            raise RequestRefused(HTTPStatus.BAD_REQUEST, "'message' must be a string")
        for name, rows in files.items():
            if not isinstance(rows, list):
                raise RequestRefused(HTTPStatus.BAD_REQUEST, f"'{name.split('.')[0]}' must be a list of lines")
        latest_at_load = body.get("latest_at_load")
        with tempfile.TemporaryDirectory(prefix="sept-review-") as tmp:
            d = Path(tmp) / "checkout"
            checkout(self.store, f"{parent.slug}@{parent.id}", d)
            try:
                for name, rows in files.items():
                    write_jsonl(d / name, rows)
            except (TypeError, ValueError) as e:  # not JSON-able (NaN, ...): same as a bad line
                return HTTPStatus.UNPROCESSABLE_ENTITY, {"errors": [{"file": None, "line": None, "message": str(e)}]}
            with self._commit_lock:  # one latest-before/after reading per commit; writes are atomic anyway
                latest_before = self._latest()
                try:
                    ref, created = commit(self.store, d, message)
                except ValidationError as e:
                    where = Path(e.file).name if e.file else None
                    return HTTPStatus.UNPROCESSABLE_ENTITY, {
                        "errors": [{"file": where.split(".")[0] if where in files else None,
                                    "line": e.line if where in files else None,
                                    "message": e.reason if where in files else str(e).replace(str(d), "checkout")}]
                    }
        child = self.store.read(ref)
        notes = []
        if latest_before != parent.id or (isinstance(latest_at_load, str) and latest_at_load != latest_before):
            notes.append(f"{self.slug}@{latest_before[:12]} had become the latest version; "
                         f"{child.ref} is a child of the reviewed version {parent.ref}")
        if not created:
            notes.append(f"identical content already stored as {child.ref}; reusing it")
        return HTTPStatus.OK, {"ref": child.ref, "id": child.id, "parent": parent.id, "created": created,
                               "margins": child.manifest.get("margins", {}), "notes": notes}


def allowed_hosts(host: str, port: int, extra: tuple[str, ...] = ()) -> set[str]:
    """Host header values this server answers to: its bind address and loopback names, with the port."""
    names = set(LOOPBACK_NAMES) | set(extra)
    names.add(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    return {f"{n}:{port}" for n in names}


class _Handler(BaseHTTPRequestHandler):
    server: "ReviewServer"
    protocol_version = "HTTP/1.1"
    server_version = "sept-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            # the query string may carry the token: log the path only
            super().log_message("%s", f"{self.command} {urlsplit(self.path).path} {args[1] if len(args) > 1 else ''}")

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _check_origin(self) -> None:
        host = self.headers.get("Host", "")
        if host not in self.server.hosts:
            raise RequestRefused(HTTPStatus.MISDIRECTED_REQUEST, f"Host {host[:100]!r} is not this server")
        origin = self.headers.get("Origin")
        if origin is not None and origin not in self.server.origins:
            raise RequestRefused(HTTPStatus.FORBIDDEN, f"Origin {origin[:100]!r} is not this server")

    def _check_token(self, query: dict[str, list[str]], allow_query: bool) -> None:
        given = self.headers.get(TOKEN_HEADER) or ((query.get("token") or [""])[0] if allow_query else "")
        if not given or not hmac.compare_digest(given.encode(), self.server.app.token.encode()):
            raise RequestRefused(HTTPStatus.FORBIDDEN, "missing or wrong review token (use the URL printed at launch)")

    def _handle(self, method: str) -> None:
        try:
            self._check_origin()
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            app = self.server.app
            if method == "GET" and url.path in _ASSETS:
                name, ctype = _ASSETS[url.path]
                return self._send(200, _asset(name), ctype)
            if not url.path.startswith("/api/"):
                raise RequestRefused(HTTPStatus.NOT_FOUND, "not found")
            if method == "GET":
                self._check_token(query, allow_query=url.path == "/api/plot")
                if url.path == "/api/plot":
                    return self._send(200, app.plot(query), "image/png")
                routes = {"/api/version": app.version, "/api/versions": app.versions,
                          "/api/diff": app.diff, "/api/plots": app.plots}
                if url.path not in routes:
                    raise RequestRefused(HTTPStatus.NOT_FOUND, "not found")
                return self._json(200, routes[url.path](query))
            self._check_token(query, allow_query=False)
            if url.path != "/api/commit":
                raise RequestRefused(HTTPStatus.NOT_FOUND, "not found")
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                raise RequestRefused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the draft as application/json")
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                raise RequestRefused(HTTPStatus.LENGTH_REQUIRED, "Content-Length required") from None
            if length > MAX_BODY or length < 0:
                raise RequestRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"draft over {MAX_BODY} bytes")
            try:
                body = json.loads(self.rfile.read(length).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise RequestRefused(HTTPStatus.BAD_REQUEST, f"body is not JSON ({e})") from None
            status, out = app.commit(body)
            return self._json(status, out)
        except RequestRefused as e:
            self.close_connection = True
            self._json(e.status, {"error": str(e)})
        except StoreError as e:
            self._json(HTTPStatus.CONFLICT, {"error": str(e)})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class ReviewServer(ThreadingHTTPServer):
    """The review page's server; `url` carries the launch token. `serve_forever()` or use `start()`."""

    daemon_threads = True

    def __init__(self, app: ReviewApp, host: str = "127.0.0.1", port: int = 0,
                 allow_hosts: tuple[str, ...] = (), verbose: bool = False):
        if ":" in host:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        self.app = app
        self.verbose = verbose
        self.port = self.server_address[1]
        self.hosts = allowed_hosts(host, self.port, allow_hosts)
        self.origins = {f"http://{h}" for h in self.hosts}
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
        self.base_url = f"http://{shown}:{self.port}"
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/?token={self.app.token}"

    def start(self) -> "ReviewServer":
        """Serve in a background thread (tests, benchmarks); `stop()` ends it."""
        self._thread = threading.Thread(target=self.serve_forever, name="sept-review", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(10)
