"""A stand-in for the service the HTTP examples call (js-http, python-http,
rust-http), Python 3 standard library only.

Run with `python3 examples/items-service.py [PORT]` (default 8181, on
127.0.0.1). It answers `GET /items` with three items (count 3, total value
42) and takes `POST /report`, printing each report with its
`X-Sandcron-Fence` and `X-Sandcron-Run` headers. It refuses (409) a report
whose fence is lower than the highest it has seen for that guest's report:
what a real service does so that a run whose claim was superseded cannot
overwrite a newer run's work. (`sandcron try` runs have fence 0, so once a
job's run has reported, a try of the same guest is refused; restart the
service to start over.)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ITEMS = {
    "items": [
        {"id": 1, "name": "apples", "price": 3, "quantity": 4},
        {"id": 2, "name": "pears", "price": 5, "quantity": 2},
        {"id": 3, "name": "plums", "price": 2, "quantity": 10},
    ]
}


class Handler(BaseHTTPRequestHandler):
    # The highest fence seen per report (per guest), as a database would keep
    # it in the report's row.
    highest_fence: dict[str, int] = {}

    def do_GET(self) -> None:
        if self.path == "/items":
            self.answer(200, ITEMS)
        else:
            self.answer(404, {"error": f"no {self.path} here"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/report":
            self.answer(404, {"error": f"no {self.path} here"})
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

    def answer(self, status: int, value: object) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # The reports are the interesting part; no access log.


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8181
    print(f"serving /items and /report on http://127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
