"""A stand-in for the service the HTTP examples call (js-http, python-http,
rust-http), Python 3 standard library only.

Run with `ITEMS_TOKEN=… python3 examples/items-service.py [PORT]` (default
8181, on 127.0.0.1). Every request must carry `Authorization: Bearer
$ITEMS_TOKEN`; one without it, or with another token, is refused (401), as a
real service refuses a job whose secret is wrong.

- `GET /items?after=ID&limit=N` answers the items whose id is above `ID`
  (default 0), at most `N` of them (default and most 100), in id order: five
  items in all, the first three worth 42 together (price × quantity), the
  last two 19. A job that keeps the id of the last item it handled reads
  each item once.
- `POST /report` takes a summary, printing it with its `X-Sandcron-Fence`
  and `X-Sandcron-Run` headers. It refuses (409) a report whose fence is
  lower than the highest it has seen for that guest's report: what a real
  service does so that a run whose claim was superseded cannot overwrite a
  newer run's work. (`sandcron try` runs have fence 0, so once a job's run
  has reported, a try of the same guest is refused; restart the service to
  start over.)
"""

import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ITEMS = [
    {"id": 1, "name": "apples", "price": 3, "quantity": 4},
    {"id": 2, "name": "pears", "price": 5, "quantity": 2},
    {"id": 3, "name": "plums", "price": 2, "quantity": 10},
    {"id": 4, "name": "figs", "price": 4, "quantity": 3},
    {"id": 5, "name": "quinces", "price": 7, "quantity": 1},
]
MAX_LIMIT = 100


class Handler(BaseHTTPRequestHandler):
    # The token every request must carry; set before the server starts.
    token = ""
    # The highest fence seen per report (per guest), as a database would keep
    # it in the report's row.
    highest_fence: dict[str, int] = {}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/items":
            self.answer(404, {"error": f"no {url.path} here"})
            return
        if not self.authorized():
            return
        query = parse_qs(url.query)
        try:
            after = int(query.get("after", ["0"])[-1])
            limit = int(query.get("limit", [str(MAX_LIMIT)])[-1])
        except ValueError:
            self.answer(400, {"error": "after and limit are whole numbers"})
            return
        if not 1 <= limit <= MAX_LIMIT:
            self.answer(400, {"error": f"limit is from 1 to {MAX_LIMIT}"})
            return
        items = [item for item in ITEMS if item["id"] > after][:limit]
        print(f"items after {after} (limit {limit}): {len(items)} sent", flush=True)
        self.answer(200, {"items": items})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/report":
            self.answer(404, {"error": f"no {self.path} here"})
            return
        if not self.authorized():
            return
        try:
            fence = int(self.headers.get("x-sandcron-fence") or "")
            guest = str(json.loads(body)["guest"])
        except (ValueError, KeyError, TypeError):
            self.answer(400, {"error": "expected X-Sandcron-Fence and a JSON report with a guest"})
            return
        run = self.headers.get("x-sandcron-run", "")
        print(f"report from run {run} with fence {fence}: {body.decode(errors='replace')}", flush=True)
        highest = Handler.highest_fence.get(guest, 0)
        if fence < highest:
            self.answer(409, {"error": f"fence {fence} is older than {highest}: a newer run reported"})
            return
        Handler.highest_fence[guest] = fence
        self.answer(200, {"stored": True})

    def authorized(self) -> bool:
        """True for the right bearer token; otherwise answers 401 and says so."""
        given = self.headers.get("authorization", "")
        expected = f"Bearer {Handler.token}"
        # Compared in constant time, as a service compares credentials.
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        why = "no token" if not given else "a wrong token"
        print(f"refused {self.command} {urlsplit(self.path).path}: {why}", flush=True)
        self.answer(401, {"error": "a valid bearer token is required"}, {"www-authenticate": "Bearer"})
        return False

    def answer(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        for name, header in (headers or {}).items():
            self.send_header(name, header)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # The lines above say what matters; no access log.


if __name__ == "__main__":
    Handler.token = os.environ.get("ITEMS_TOKEN", "")
    if not Handler.token:
        sys.exit("set ITEMS_TOKEN to the token jobs must send (the value of their secret)")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8181
    print(f"serving /items and /report on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
