// Build and run with `scripts/build-guests.sh assemblyscript` and then
// `wasmtime run --env SANDCRON_JOB=demo --env SANDCRON_TICK=2026-11-22T00:00:00Z target/guests/assemblyscript.wasm`.
//
// A sandcron job in AssemblyScript. @assemblyscript/wasi-shim swaps the
// compiler's web bindings for WASI preview 1 ones and wraps this top-level
// code in an exported `_start`, so the output is a WASI command module that
// imports only `wasi_snapshot_preview1`.

function envOrEmpty(name: string): string {
  return process.env.has(name) ? process.env.get(name) : "";
}

const job = envOrEmpty("SANDCRON_JOB");
const tick = envOrEmpty("SANDCRON_TICK");
process.stdout.write("hello from assemblyscript: job=" + job + " tick=" + tick + "\n");
process.stdout.write('::sandcron::result {"lang":"assemblyscript"}\n');
