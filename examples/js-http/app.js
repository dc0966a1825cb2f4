// Build and run with `scripts/build-guests.sh js-http` and then a sandcron job
// whose env sets API_BASE and whose egress lists it (see README.md).
//
// A sandcron job in JavaScript: componentize-js embeds the StarlingMonkey
// engine and this module into a WASI 0.2 component exporting `wasi:cli/run`.
// `fetch()` is StarlingMonkey's, built on the `wasi:http/outgoing-handler`
// the world imports, so every call goes through the host's egress rules.
// The module's top level runs at build time (wizer snapshots it); the work
// happens in `run.run`, which the host calls for each run.
import { getEnvironment } from 'wasi:cli/environment@0.2.12';

const NAME = 'js-http';

async function summarize() {
  const env = Object.fromEntries(getEnvironment());
  const base = (env.API_BASE ?? '').replace(/\/+$/, '');
  if (!base) {
    throw new Error('API_BASE is not set (the job env gives the service base URL)');
  }

  const listing = await call('GET', `${base}/items`);
  if (!listing.ok) {
    throw new Error(`GET ${base}/items answered ${listing.status}`);
  }
  const { items } = await listing.json();
  const total = items.reduce((sum, item) => sum + item.price * item.quantity, 0);

  // Every write to an outside system carries the run's fencing token, so the
  // service can refuse a write from a run that has since been superseded.
  const report = await call('POST', `${base}/report`, {
    headers: {
      'content-type': 'application/json',
      'x-sandcron-fence': env.SANDCRON_FENCE ?? '',
      'x-sandcron-run': env.SANDCRON_RUN_ID ?? '',
    },
    body: JSON.stringify({ guest: NAME, count: items.length, total }),
  });
  // Read the answer to the end, so that the call is over before the run is.
  await report.text();
  if (!report.ok) {
    throw new Error(`POST ${base}/report answered ${report.status}`);
  }
  console.log(`${NAME}: ${items.length} items worth ${total}, reported (${report.status})`);
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
