"""Real local HTTP servers for tests: the scripted OpenAI-compatible server (from the
package) and a danbooru fake. Stdlib only; one thread per connection on 127.0.0.1."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from stages.fakeserver import FakeOpenAI, Fault, LocalServer, QuickHandler, default_reply, serve_in_subprocess

__all__ = ["FakeDanbooru", "FakeOpenAI", "Fault", "LocalServer", "QuickHandler", "default_reply",
           "serve_in_subprocess"]


class FakeDanbooru(LocalServer):
    """Danbooru's /tags.json and /wiki_pages/NAME.json from a dict; logs raw request paths."""

    def __init__(self, wiki: dict[str, str], posts: dict[str, int] | None = None, *,
                 categories: dict[str, int] | None = None,
                 implications: dict[str, list[str]] | None = None,
                 other_names: dict[str, list[str]] | None = None):
        self.wiki = wiki                      # danbooru names (underscores) -> body
        self.posts = posts or {}
        self.categories = categories or {}    # name -> danbooru category number
        self.implications = implications or {}   # antecedent -> consequents (active)
        self.other_names = other_names or {}
        self.paths: list[str] = []
        self.agents: list[str] = []
        self.fail: dict[str, deque] = {}      # name -> statuses to answer first
        super().__init__()

    def _handler(self):
        from urllib.parse import parse_qs, unquote, urlsplit

        fake = self

        class Handler(QuickHandler):

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                with fake.lock:
                    fake.paths.append(self.path)
                    fake.agents.append(self.headers.get("User-Agent", ""))
                parts = urlsplit(self.path)
                if parts.path == "/tags.json":
                    name = parse_qs(parts.query).get("search[name_matches]", [""])[0]
                    known = name in fake.posts or name in fake.categories
                    found = [{"name": name, "post_count": fake.posts.get(name, 1),
                              "category": fake.categories.get(name, 0)}] if known else []
                    self._send(200, found)
                    return
                if parts.path == "/tag_implications.json":
                    query = parse_qs(parts.query)
                    name = query.get("search[antecedent_name]", [""])[0]
                    self._send(200, [{"antecedent_name": name, "consequent_name": c,
                                      "status": "active"} for c in fake.implications.get(name, [])])
                    return
                if parts.path.startswith("/wiki_pages/") and parts.path.endswith(".json"):
                    name = unquote(parts.path[len("/wiki_pages/"):-len(".json")])
                    queue = fake.fail.get(name)
                    if queue:
                        self._send(queue.popleft(), {"error": "injected"})
                        return
                    if name in fake.wiki:
                        self._send(200, {"title": name, "body": fake.wiki[name],
                                         "other_names": fake.other_names.get(name, [])})
                    else:
                        self._send(404, {"success": False, "message": "not found"})
                    return
                self._send(404, {})

        return Handler
