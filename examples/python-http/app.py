"""A sandcron job in Python that calls an HTTP service through wasi:http.

Build and run with `scripts/build-guests.sh python-http` and then a sandcron
job whose config sets API_BASE, whose secrets give API_TOKEN and whose egress
lists the service (see README.md).

It reads the items added since its last run from
`$API_BASE/items?after=CURSOR&limit=3` with the service's token, sums them
up, POSTs the summary to `$API_BASE/report` with the run's fencing token,
then keeps the id of the last item in the job's key-value state as the next
run's cursor, and prints two lines. The job's config, its secrets and the
run context come through `wasi:config/store`, the state through
`wasi:keyvalue/store`.

componentize-py generates the `wit_world` bindings from `wit/world.wit`:
`wasi:http/outgoing-handler` sends a request and hands back a future, and the
helpers below wait on it (and on the body streams) with `wasi:io/poll`, the
same pattern as componentize-py's own HTTP example, reduced to what one
request at a time needs. No asyncio: the calls here are sequential. Two
imported interfaces are called `store`, so the bindings name them by package
(`wasi_config_store`, `wasi_keyvalue_store`).

componentize-py runs this module's top level at build time and snapshots the
result, so the work happens in `Run.run`.
"""

import json
import re
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, poll, wasi_config_store, wasi_keyvalue_store
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
# Items read per run at most; the next run goes on from where this one ended.
PAGE_SIZE = 3
# The key of the job's state that holds the id of the last item reported.
CURSOR_KEY = "cursor"
# wasi:io streams take at most 4096 bytes per blocking write.
WRITE_CHUNK = 4096
READ_CHUNK = 64 * 1024


class Run(exports.Run):
    def run(self) -> None:
        try:
            summarize()
        except (HttpError, HostError) as error:
            print(f"{NAME}: {error}", file=sys.stderr)
            # `Err(None)` is the `err` of wasi:cli/run's result: the run fails
            # (any other exception escaping here would trap instead).
            raise Err(None)


class HttpError(Exception):
    """A call that failed, or a service that answered with an error."""


class HostError(Exception):
    """wasi:config or wasi:keyvalue refused, or a value the job needs is missing."""


def summarize() -> None:
    base = required("API_BASE", "the job's config gives the service base URL").rstrip("/")
    token = required("API_TOKEN", "the job's secrets give the service's token")
    auth = ("authorization", f"Bearer {token}")

    bucket = host(lambda: wasi_keyvalue_store.open("default"), "opening the job state")
    after = read_cursor(bucket)
    url = f"{base}/items?after={after}&limit={PAGE_SIZE}"
    status, body = request(Method_Get(), url, [auth])
    if not 200 <= status < 300:
        raise HttpError(f"GET {url} answered {status}{refusal(status)}")
    try:
        items = json.loads(body)["items"]
        count = len(items)
        total = sum(item["price"] * item["quantity"] for item in items)
        cursor = max([after] + [int(item["id"]) for item in items])
    except (ValueError, KeyError, TypeError) as error:
        raise HttpError(f"GET {url}: not a list of items: {error!r}") from error

    # Every write to an outside system carries the run's fencing token, so the
    # service can refuse a write from a run that has since been superseded.
    headers = [
        auth,
        ("content-type", "application/json"),
        ("x-sandcron-fence", config("SANDCRON_FENCE") or ""),
        ("x-sandcron-run", config("SANDCRON_RUN_ID") or ""),
    ]
    report = json.dumps({"guest": NAME, "count": count, "total": total}).encode()
    status, _ = request(Method_Post(), f"{base}/report", headers, report)
    if not 200 <= status < 300:
        raise HttpError(f"POST {base}/report answered {status}{refusal(status)}")
    print(f"{NAME}: {count} items worth {total}, reported ({status})", flush=True)

    # Only once the report is in: a run that fails before this line leaves
    # the cursor where it was, and the next run reads the same items again.
    # The write is fenced: a superseded run cannot move the cursor back.
    host(lambda: bucket.set(CURSOR_KEY, str(cursor).encode()), f"saving the cursor {cursor}")
    print(f"{NAME}: cursor {after} -> {cursor}")


def config(key: str) -> str | None:
    """A wasi:config value: the job's config, its secrets or the run context."""
    return host(lambda: wasi_config_store.get(key), f"reading {key} from wasi:config")


def required(key: str, why: str) -> str:
    value = config(key)
    if not value:
        raise HostError(f"{key} is not set ({why})")
    return value


def read_cursor(bucket: wasi_keyvalue_store.Bucket) -> int:
    """The id of the last item a run reported, 0 before the first."""
    stored = host(lambda: bucket.get(CURSOR_KEY), "reading the cursor")
    if stored is None:
        return 0
    text = stored.decode(errors="replace")
    if not re.fullmatch(r"[0-9]+", text):
        raise HostError(f"the stored cursor {text!r} is not an item id")
    return int(text)


def host[T](action: Callable[[], T], what: str) -> T:
    """Calls wasi:config or wasi:keyvalue; a refusal (`Err`, its value the WIT
    error: `Error_Other("quota exceeded: …")`) becomes a HostError naming what
    failed."""
    try:
        return action()
    except Err as error:
        reason = getattr(error.value, "value", None) or type(error.value).__name__.removeprefix("Error_")
        raise HostError(f"{what}: {reason}") from None


def refusal(status: int) -> str:
    if status == 401:
        return " (the service refused the token: check the secret API_TOKEN names)"
    return ""


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
