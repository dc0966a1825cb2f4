#!/usr/bin/env python3
"""APScheduler side of the fire-lateness benchmark (bench/src/lateness.rs).

Build and run with `just bench` (scripts/bench-install-peers.sh installs
APScheduler into target/bench-tools/); by hand:

    target/bench-tools/venv-apscheduler-3.11.3/bin/python scripts/bench-apscheduler.py \
        --jobs 1000 --seconds 20 --warmup 3 --out /tmp/lateness.txt

N no-op jobs fire every second (CronTrigger second='*', like sandcron's
`* * * * * *`) in one BackgroundScheduler with APScheduler's defaults: the
default ThreadPoolExecutor (10 threads), misfire_grace_time 1 s,
max_instances 1, no coalescing. Each job returns the instant it started; the
EVENT_JOB_EXECUTED listener writes start minus scheduled instant (ms, one a
line) for ticks inside the measured window. Ticks APScheduler dropped (missed
past the grace time, or skipped at max_instances) are counted. A JSON summary
goes to stdout.
"""

import argparse
import json
import logging
import resource
import threading
import time

import apscheduler
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger


def noop():
    return time.time()


def trigger(i, mix):
    """Every second, or the scale row's mix (bench/src/scale.rs schedule_text)."""
    if not mix:
        return CronTrigger(second="*", timezone="UTC")
    second = (i * 7919) % 60
    if i % 5 == 0:
        return CronTrigger(second=f"{second},{(second + 30) % 60}", timezone="UTC")
    if i % 5 in (1, 2):
        return CronTrigger(second=str(second), timezone="UTC")
    return CronTrigger(second=str(second), minute="*/2", timezone="UTC")


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mix", action="store_true",
                        help="the scale row's job mix (one fire per job per minute on average) "
                             "instead of every second")
    args = parser.parse_args()
    # APScheduler logs every miss and skip as a warning; those are counted.
    logging.basicConfig(level=logging.ERROR)

    lock = threading.Lock()
    samples = []
    counts = {"executed": 0, "missed": 0, "max_instances": 0}
    window = [float("inf"), float("-inf")]

    def listener(event):
        scheduled = None
        if event.code == EVENT_JOB_EXECUTED:
            scheduled = event.scheduled_run_time.timestamp()
        elif event.code == EVENT_JOB_MISSED:
            scheduled = event.scheduled_run_time.timestamp()
        else:
            times = getattr(event, "scheduled_run_times", None) or []
            scheduled = times[0].timestamp() if times else None
        if scheduled is None or not (window[0] <= scheduled < window[1]):
            return
        with lock:
            if event.code == EVENT_JOB_EXECUTED:
                counts["executed"] += 1
                samples.append((event.retval - scheduled) * 1000.0)
            elif event.code == EVENT_JOB_MISSED:
                counts["missed"] += 1
            else:
                counts["max_instances"] += 1

    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    loaded = time.time()
    for i in range(args.jobs):
        scheduler.add_job(noop, trigger(i, args.mix), id=f"job-{i:06d}")
    scheduler.start()
    loaded = time.time() - loaded
    start = int(time.time() + args.warmup) + 1
    window[0], window[1] = start, start + args.seconds
    time.sleep(max(0.0, start - time.time()))
    cpu_before = cpu_seconds()
    time.sleep(max(0.0, start + args.seconds - time.time()))
    cpu = cpu_seconds() - cpu_before
    rss_kib = rss()
    time.sleep(1.5)
    scheduler.shutdown(wait=True)
    with lock:
        with open(args.out, "w") as out:
            out.write("\n".join(f"{s:.3f}" for s in samples))
        expected = None if args.mix else args.jobs * int(args.seconds)
        print(json.dumps({
            "version": apscheduler.__version__,
            "jobs": args.jobs,
            "seconds": args.seconds,
            "expected": expected,
            "load_s": loaded,
            "rss_kib": rss_kib,
            "cpu_per_s": cpu / args.seconds,
            **counts,
        }))


if __name__ == "__main__":
    main()
