/*
 * Build and run with `scripts/build-guests.sh c` and then
 * `wasmtime run --env SANDCRON_JOB=demo --env SANDCRON_TICK=2026-11-22T00:00:00Z target/guests/c.wasm`.
 *
 * A sandcron job in C: a wasip1 core module compiled by `zig cc` (PyPI
 * `ziglang`) against its bundled wasi-libc. Everything sandcron tells a run
 * arrives as SANDCRON_* environment variables; the result is one stdout line
 * `::sandcron::result <json>`.
 */
#include <stdio.h>
#include <stdlib.h>

static const char *env_or_empty(const char *name) {
    const char *value = getenv(name);
    return value ? value : "";
}

int main(void) {
    const char *job = env_or_empty("SANDCRON_JOB");
    const char *tick = env_or_empty("SANDCRON_TICK");
    printf("hello from c: job=%s tick=%s\n", job, tick);

    /* SANDCRON_ATTEMPT is a decimal number sandcron sets (1 on the first
     * attempt); absent when run by hand. */
    long attempt = strtol(env_or_empty("SANDCRON_ATTEMPT"), NULL, 10);
    printf("::sandcron::result {\"lang\":\"c\",\"attempt\":%ld}\n", attempt > 0 ? attempt : 1);
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
