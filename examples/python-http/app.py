"""A sandcron job in Python that calls an HTTP service through wasi:http.

Build and run with `scripts/build-guests.sh python-http` and then a sandcron
job whose env sets API_BASE and whose egress lists it (see README.md).

It GETs `$API_BASE/items`, sums the items up, POSTs the summary to
`$API_BASE/report` with the run's fencing token, and prints one line.
componentize-py generates the `wit_world` bindings from `wit/world.wit`:
`wasi:http/outgoing-handler` sends a request and hands back a future, and the
helpers below wait on it (and on the body streams) with `wasi:io/poll`, the
same pattern as componentize-py's own HTTP example, reduced to what one
request at a time needs. No asyncio: the calls here are sequential.

componentize-py runs this module's top level at build time and snapshots the
result, so the work happens in `Run.run`; `os.environ` holds the run's values.
"""

import json
import os
import sys
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, poll
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    ErrorCode,
    Fields,
    FutureIncomingResponse,
    IncomingResponse,
    Method,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingRequest,
    Scheme_Http,
    Scheme_Https,
    Scheme_Other,
)

NAME = "python-http"
# wasi:io streams take at most 4096 bytes per blocking write.
WRITE_CHUNK = 4096
READ_CHUNK = 64 * 1024


class Run(exports.Run):
    def run(self) -> None:
        try:
            print(summarize())
        except HttpError as error:
            print(f"{NAME}: {error}", file=sys.stderr)
            # `Err(None)` is the `err` of wasi:cli/run's result: the run fails
            # (any other exception escaping here would trap instead).
            raise Err(None)


class HttpError(Exception):
    """A call that failed, or a service that answered with an error."""


def summarize() -> str:
    base = os.environ.get("API_BASE", "").rstrip("/")
    if not base:
        raise HttpError("API_BASE is not set (the job env gives the service base URL)")

    status, body = request(Method_Get(), f"{base}/items")
    if not 200 <= status < 300:
        raise HttpError(f"GET {base}/items answered {status}")
    try:
        items = json.loads(body)["items"]
        count = len(items)
        total = sum(item["price"] * item["quantity"] for item in items)
    except (ValueError, KeyError, TypeError) as error:
        raise HttpError(f"GET {base}/items: not a list of items: {error!r}") from error

    # Every write to an outside system carries the run's fencing token, so the
    # service can refuse a write from a run that has since been superseded.
    headers = [
        ("content-type", "application/json"),
        ("x-sandcron-fence", os.environ.get("SANDCRON_FENCE", "")),
        ("x-sandcron-run", os.environ.get("SANDCRON_RUN_ID", "")),
    ]
    report = json.dumps({"guest": NAME, "count": count, "total": total}).encode()
    status, _ = request(Method_Post(), f"{base}/report", headers, report)
    if not 200 <= status < 300:
        raise HttpError(f"POST {base}/report answered {status}")
    return f"{NAME}: {count} items worth {total}, reported ({status})"


def request(method: Method, url: str, headers: list[tuple[str, str]] = [], body: bytes = b"") -> tuple[int, bytes]:
    """Sends one request and returns the response's status and whole body."""
    parts = urlsplit(url)
    scheme = {"http": Scheme_Http(), "https": Scheme_Https()}.get(parts.scheme) or Scheme_Other(parts.scheme)
    fields = [(name, value.encode()) for name, value in headers]
    if body:
        # A known length, so the body goes out in one piece rather than chunked.
        fields.append(("content-length", str(len(body)).encode()))
    outgoing = OutgoingRequest(Fields.from_list(fields))
    outgoing.set_method(method)
    outgoing.set_scheme(scheme)
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else ""))
    outgoing_body = outgoing.body()

    # `handle` takes the request; the host may refuse it here already (a
    # destination the job's egress does not list, say).
    try:
        future = outgoing_handler.handle(outgoing, None)
    except Err as error:
        raise HttpError(f"{method_name(method)} {url}: {describe(error.value)}") from None
    with future:
        write_body(outgoing_body, body)
        with wait_for_response(future, f"{method_name(method)} {url}") as response:
            return response.status(), read_body(response)


def wait_for_response(future: FutureIncomingResponse, what: str) -> IncomingResponse:
    # The poll loop: until the response is there, wait on the future's pollable.
    while (result := future.get()) is None:
        with future.subscribe() as ready:
            poll.poll([ready])
    if isinstance(result, Ok) and isinstance(result.value, Ok):
        return result.value.value
    error = result.value if isinstance(result, Ok) else result
    raise HttpError(f"{what}: {describe(error.value)}")


def write_body(body: OutgoingBody, data: bytes) -> None:
    try:
        with body.write() as stream:
            for start in range(0, len(data), WRITE_CHUNK):
                stream.blocking_write_and_flush(data[start : start + WRITE_CHUNK])
    except Err as error:
        raise HttpError(f"writing the request body: {describe(error.value)}") from None
    OutgoingBody.finish(body, None)


def read_body(response: IncomingResponse) -> bytes:
    chunks = []
    with response.consume() as body, body.stream() as stream:
        while True:
            try:
                chunk = stream.read(READ_CHUNK)
            except Err as error:
                if isinstance(error.value, StreamError_Closed):
                    return b"".join(chunks)
                raise HttpError(f"reading the response body: {describe(error.value)}") from None
            if chunk:
                chunks.append(chunk)
            else:
                with stream.subscribe() as ready:
                    poll.poll([ready])


def method_name(method: Method) -> str:
    return type(method).__name__.removeprefix("Method_").upper()


def describe(error: ErrorCode | object) -> str:
    """`ErrorCode_HttpRequestDenied()` reads as `HttpRequestDenied`."""
    name = type(error).__name__.removeprefix("ErrorCode_").removeprefix("StreamError_")
    detail = getattr(error, "value", None)
    return f"{name} {detail}" if detail is not None else name
