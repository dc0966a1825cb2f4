// Build and run with `scripts/build-guests.sh js-http` and then a sandcron job
// whose config sets API_BASE, whose secrets give API_TOKEN and whose egress
// lists the service (see README.md).
//
// A sandcron job in JavaScript: componentize-js embeds the StarlingMonkey
// engine and this module into a WASI 0.2 component exporting `wasi:cli/run`.
// `fetch()` is StarlingMonkey's, built on the `wasi:http/outgoing-handler`
// the world imports, so every call goes through the host's egress rules.
// The job's config, its secrets and the run context come through
// `wasi:config/store`, the cursor it keeps between runs through
// `wasi:keyvalue/store`.
// The module's top level runs at build time (wizer snapshots it); the work
// happens in `run.run`, which the host calls for each run.
import { get as configValue } from 'wasi:config/store@0.2.0-rc.1';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';

const NAME = 'js-http';
// Items read per run at most; the next run goes on from where this one ended.
const PAGE_SIZE = 3;
// The key of the job's state that holds the id of the last item reported.
const CURSOR_KEY = 'cursor';

async function summarize() {
  const base = required('API_BASE', "the job's config gives the service base URL").replace(/\/+$/, '');
  const token = required('API_TOKEN', "the job's secrets give the service's token");
  const auth = { authorization: `Bearer ${token}` };

  const bucket = host(() => open('default'), 'opening the job state');
  const after = readCursor(bucket);
  const url = `${base}/items?after=${after}&limit=${PAGE_SIZE}`;
  const listing = await call('GET', url, { headers: auth });
  if (!listing.ok) {
    await listing.text();
    throw new Error(`GET ${url} answered ${listing.status}${refusal(listing.status)}`);
  }
  const { items } = await listing.json();
  const total = items.reduce((sum, item) => sum + item.price * item.quantity, 0);
  const cursor = items.reduce((last, item) => Math.max(last, item.id), after);

  // Every write to an outside system carries the run's fencing token, so the
  // service can refuse a write from a run that has since been superseded.
  const report = await call('POST', `${base}/report`, {
    headers: {
      ...auth,
      'content-type': 'application/json',
      'x-sandcron-fence': config('SANDCRON_FENCE') ?? '',
      'x-sandcron-run': config('SANDCRON_RUN_ID') ?? '',
    },
    body: JSON.stringify({ guest: NAME, count: items.length, total }),
  });
  // Read the answer to the end, so that the call is over before the run is.
  await report.text();
  if (!report.ok) {
    throw new Error(`POST ${base}/report answered ${report.status}${refusal(report.status)}`);
  }
  console.log(`${NAME}: ${items.length} items worth ${total}, reported (${report.status})`);

  // Only once the report is in: a run that fails before this line leaves
  // the cursor where it was, and the next run reads the same items again.
  // The write is fenced: a superseded run cannot move the cursor back.
  host(() => bucket.set(CURSOR_KEY, new TextEncoder().encode(String(cursor))), `saving the cursor ${cursor}`);
  console.log(`${NAME}: cursor ${after} -> ${cursor}`);
}

// A `wasi:config` value: from the job's `config`, its secrets or the run
// context (`SANDCRON_*`); undefined when there is none.
function config(key) {
  return host(() => configValue(key), `reading ${key} from wasi:config`);
}

function required(key, why) {
  const value = config(key);
  if (!value) {
    throw new Error(`${key} is not set (${why})`);
  }
  return value;
}

// The id of the last item a run reported, 0 before the first.
function readCursor(bucket) {
  const stored = host(() => bucket.get(CURSOR_KEY), 'reading the cursor');
  if (stored === undefined) {
    return 0;
  }
  const text = new TextDecoder().decode(stored);
  if (!/^\d+$/.test(text)) {
    throw new Error(`the stored cursor ${JSON.stringify(text)} is not an item id`);
  }
  return Number(text);
}

// Calls wasi:config or wasi:keyvalue. A WIT `result` error arrives as a
// thrown error whose payload is the WIT variant (`{ tag: 'other', val:
// 'quota exceeded: …' }`): say what failed, and why.
function host(action, what) {
  try {
    return action();
  } catch (err) {
    const payload = err.payload ?? err;
    const reason = payload.val ?? payload.tag ?? payload.message ?? payload;
    throw new Error(`${what}: ${reason}`);
  }
}

function refusal(status) {
  return status === 401 ? ' (the service refused the token: check the secret API_TOKEN names)' : '';
}

// fetch() only says "NetworkError" when the host refuses or cannot make a
// call (its wasi:http error code is not passed on): name the call at least.
async function call(method, url, init = {}) {
  try {
    return await fetch(url, { ...init, method });
  } catch (err) {
    throw new Error(`${method} ${url}: ${err.message ?? err}`);
  }
}

// `wasi:cli/run`. componentize-js runs the event loop until the returned
// promise settles; a rejection becomes the `err` of run's result, which
// fails the run (and makes `wasmtime run` exit 1), so print why first.
export const run = {
  async run() {
    try {
      await summarize();
    } catch (err) {
      console.error(`${NAME}: ${err.message ?? err}`);
      throw err;
    }
  },
};
