#!/usr/bin/env python3
"""Generates host/testdata/cron-reference.json, the independent reference for sandcron's cron module.

Install the reference implementation first (the fixture was generated with
exactly this version, and another one may compute different ticks):

    pip install croniter==7.0.0

Run from the repository root:

    python3 scripts/gen-cron-reference.py

With a fixed random seed the script generates several thousand 5-, 6- and
7-field expressions (lists, ranges, steps, `a/n` starts, month and weekday
names in mixed case, day-of-week 7, `?`, restricted day-of-month plus
day-of-week for Vixie's OR rule, macros, odd whitespace), and for each a few
start instants in UTC. It records the next fire times croniter computes, as
Unix seconds, and whether croniter finds no further fire through year 2199.
The Rust test `cronexpr::tests::reference` replays every case and requires
exact agreement.

Where croniter deliberately differs from Vixie cron, or from sandcron's
documented dialect, the corner is kept out of the bulk fixture and covered by
hand-written Rust tests that assert sandcron's behaviour instead
(`cronexpr::tests::vixie_corners`):

1. The day-of-month/day-of-week OR rule. Vixie flags a day field as "star"
   when its text begins with `*`, and uses OR only when neither field is
   flagged. croniter decides from the expanded value sets instead: it uses OR
   whenever neither expanded set is the whole field, so `*/2` in one day field
   with the other restricted (say `0 0 */2 * 1`) is OR in croniter but AND in
   Vixie. Every generated expression whose two rules disagree is dropped (the
   script computes both, using croniter's own expansion).
2. Equal ranges. croniter reads a range whose two ends are equal, such as
   `5-5` or `Jan-Jan`, as the whole cycle; Vixie reads it as the single value.
   The generator only writes ranges whose start is below their end, and never
   writes `0-SUN` (in sandcron `SUN` at a range end means 7 only after a
   start above 0, so `0-SUN` is Sunday alone, while croniter aliases it to the
   equal range `0-0`).
3. Wrapping ranges. croniter accepts a start after the end (`22-2`, `Nov-Feb`)
   and wraps around; sandcron rejects them, as the documented dialect says.
   Never generated.
4. Day-of-week `7/n`. croniter aliases the start 7 to 0 and reads `7/2` as
   `0-6/2`; sandcron reads a start past the step maximum as that single day,
   so `7/2` is Sunday only. Never generated.
5. Year bounds. croniter's year field stops at 2099 and sandcron's at 2199,
   so years are generated within 2000-2099, and the open-ended year forms
   `*/n` and `a/n` (which would reach past 2099 in sandcron) are not used.
6. Search horizon. croniter gives up after `max_years_between_matches` years
   without a match (50 by default); the script raises it to 250 so that "no
   further fire" really means none through 2199. For 5- and 6-field
   expressions croniter has no upper year bound while sandcron stops after
   2199: fires after 2199 are recorded as the end of the schedule.
7. `@every` is not a croniter feature; it is covered by Rust tests only.
8. Extensions sandcron rejects: croniter accepts Quartz's `L`, `W` and `#`
   and Jenkins-style `H`/`R` hashed fields. None is generated; the Rust parse
   tests check that sandcron rejects them.
9. Time zones. Every start instant and fire is in UTC. croniter does not
   follow Vixie's daylight-saving rule: it fires a fixed-time job twice in a
   fall-back fold (`30 1 * * *` in America/New_York fires at both 01:30 EDT
   and 01:30 EST on 2026-11-01), where Vixie fires only the first. Daylight
   saving is covered by `cronexpr::tests::dst` (hand-checked instants) and
   the brute-force oracle in `cronexpr::tests::oracle` instead.
"""

import importlib.metadata
import json
import os
import random
import sys
from datetime import datetime, timezone

from croniter import CroniterBadDateError, croniter

EXPECTED_CRONITER = "7.0.0"
SEED = 20260308
CASES = 3600
FIRES_PER_RUN = 6
LAST_YEAR = 2199
OUTPUT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "host", "testdata", "cron-reference.json"
)

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "dom": (1, 31),
    "month": (1, 12),
    "dow": (0, 7),
    "year": (2000, 2099),
}

# Probabilities of "*" and "*/n" per field; the rest are lists of items.
SHAPES = {
    "second": (0.15, 0.20),
    "minute": (0.15, 0.20),
    "hour": (0.30, 0.15),
    "dom": (0.55, 0.10),
    "month": (0.60, 0.10),
    "dow": (0.55, 0.08),
}

MACROS = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]

START_LOW = int(datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp())
START_HIGH = int(datetime(2060, 1, 1, tzinfo=timezone.utc).timestamp())
END_OF_LAST_YEAR = int(datetime(LAST_YEAR + 1, 1, 1, tzinfo=timezone.utc).timestamp())


def mixed_case(rng, name):
    return rng.choice([name.lower(), name.upper(), name.title()])


def render(rng, field, value, allow_sunday_name=True):
    """Writes a value as a number or, sometimes, as a name."""
    if field == "month" and rng.random() < 0.35:
        return mixed_case(rng, MONTHS[value - 1])
    if field == "dow" and rng.random() < 0.35:
        if value < 7:
            return mixed_case(rng, WEEKDAYS[value])
        if allow_sunday_name:
            return mixed_case(rng, "sun")
    return str(value)


def gen_item(rng, field):
    low, high = RANGES[field]
    span = high - low + 1
    kinds = ["single", "range", "range_step"]
    weights = [40, 30, 15]
    if field != "year":
        kinds.append("start_step")
        weights.append(15)
    kind = rng.choices(kinds, weights)[0]
    if kind == "single":
        return render(rng, field, rng.randint(low, high))
    if kind == "start_step":
        # Exclusion 4: no day-of-week 7 as a start with a step.
        top = 6 if field == "dow" else high
        start = rng.randint(low, top)
        return f"{render(rng, field, start)}/{rng.randint(1, max(2, span // 2 + 3))}"
    # Exclusions 2 and 3: the start is strictly below the end.
    start = rng.randint(low, high - 1)
    end = rng.randint(start + 1, high)
    text = f"{render(rng, field, start)}-{render(rng, field, end, allow_sunday_name=start > 0)}"
    if kind == "range_step":
        text += f"/{rng.randint(1, max(2, (end - start) + 3))}"
    return text


def gen_list(rng, field):
    count = rng.choices([1, 2, 3, 4], [55, 25, 14, 6])[0]
    return ",".join(gen_item(rng, field) for _ in range(count))


def gen_field(rng, field, force_restricted=False):
    low, high = RANGES[field]
    if field == "year":
        # Exclusion 5: no "*/n" or "a/n" in the years field.
        return "*" if rng.random() < 0.2 else gen_list(rng, field)
    p_star, p_step = SHAPES[field]
    if field in ("dom", "dow") and not force_restricted and rng.random() < 0.03:
        return "?"
    r = rng.random()
    if force_restricted:
        r = 1.0
    if r < p_star:
        return "*"
    if r < p_star + p_step:
        return f"*/{rng.randint(1, (high - low + 1) // 2 + 2)}"
    return gen_list(rng, field)


def join_fields(rng, fields):
    separators = [" "] * 8 + ["  ", "\t", " \t "]
    text = fields[0]
    for field in fields[1:]:
        text += rng.choice(separators) + field
    if rng.random() < 0.05:
        text = " " + text + rng.choice(["", " ", "\t"])
    return text


def gen_expression(rng):
    """Returns the expression text and its number of fields."""
    r = rng.random()
    if r < 0.04:
        name = rng.choice(MACROS)
        return (name if rng.random() < 0.7 else mixed_case(rng, name)), 5
    count = 5 if r < 0.45 else (6 if r < 0.80 else 7)
    both_days = rng.random() < 0.15  # exercise the OR rule often enough
    fields = []
    if count >= 6:
        fields.append(gen_field(rng, "second"))
    fields += [
        gen_field(rng, "minute"),
        gen_field(rng, "hour"),
        gen_field(rng, "dom", force_restricted=both_days),
        gen_field(rng, "month"),
        gen_field(rng, "dow", force_restricted=both_days),
    ]
    if count == 7:
        fields.append(gen_field(rng, "year"))
    return join_fields(rng, fields), count


def day_rules_agree(text, count):
    """Exclusion 1: Vixie's OR decision (text begins with "*") against croniter's."""
    parts = text.split()
    if len(parts) < 5 or parts[0].startswith("@"):
        return True
    offset = 1 if count >= 6 else 0
    dom_text, dow_text = parts[2 + offset], parts[4 + offset]
    vixie_or = not dom_text.startswith(("*", "?")) and not dow_text.startswith(("*", "?"))
    expanded, _ = croniter.expand(text, second_at_beginning=count >= 6)
    croniter_or = expanded[2] != ["*"] and expanded[4] != ["*"]
    return vixie_or == croniter_or


def year_window(text):
    """For 7-field expressions, the span of start instants worth testing."""
    parts = text.split()
    if len(parts) != 7 or parts[6] == "*":
        return START_LOW, START_HIGH
    expanded, _ = croniter.expand(text, second_at_beginning=True)
    years = [y for y in expanded[6] if isinstance(y, int)]
    if not years:
        return START_LOW, START_HIGH
    low = int(datetime(max(1971, min(years) - 3), 1, 1, tzinfo=timezone.utc).timestamp())
    high = int(datetime(max(years) + 1, 1, 1, tzinfo=timezone.utc).timestamp())
    return low, high


def fires(text, count, after_ms):
    """The next fires croniter computes after `after_ms`, and whether it ends."""
    it = croniter(
        text,
        after_ms / 1000.0,
        second_at_beginning=count >= 6,
        max_years_between_matches=250,
    )
    result = []
    for _ in range(FIRES_PER_RUN):
        try:
            value = it.get_next(float)
        except CroniterBadDateError:
            return result, True
        if value != int(value):
            raise SystemExit(f"non-integral fire {value} for {text!r}")
        if int(value) >= END_OF_LAST_YEAR:
            return result, True
        result.append(int(value))
    return result, False


def main():
    installed = importlib.metadata.version("croniter")
    if installed != EXPECTED_CRONITER:
        raise SystemExit(f"croniter {EXPECTED_CRONITER} is required, found {installed}")
    rng = random.Random(SEED)
    cases = []
    seen = set()
    dropped_or_rule = 0
    while len(cases) < CASES:
        text, count = gen_expression(rng)
        if text in seen:
            continue
        seen.add(text)
        if not day_rules_agree(text, count):
            dropped_or_rule += 1
            continue
        low, high = year_window(text) if count == 7 else (START_LOW, START_HIGH)
        runs = []
        starts = [rng.randint(low, high) * 1000, rng.randint(low, high) * 1000 + rng.randint(1, 999)]
        for after_ms in starts:
            nexts, end = fires(text, count, after_ms)
            runs.append((after_ms, nexts, end))
        # A start exactly on a fire checks that fires are strictly after it.
        first_nexts = runs[0][1]
        if first_nexts:
            after_ms = first_nexts[0] * 1000
            nexts, end = fires(text, count, after_ms)
            runs.append((after_ms, nexts, end))
        case = {"expr": text, "runs": []}
        for after_ms, nexts, end in runs:
            run = {"after_ms": after_ms, "next": nexts}
            if end:
                run["end"] = True
            case["runs"].append(run)
        cases.append(case)

    lines = [
        "{",
        '"generator": "scripts/gen-cron-reference.py",',
        f'"croniter": "{EXPECTED_CRONITER}",',
        f'"seed": {SEED},',
        '"cases": [',
    ]
    lines.append(",\n".join(json.dumps(case, separators=(",", ":")) for case in cases))
    lines.append("]")
    lines.append("}")
    with open(OUTPUT, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(
        f"wrote {len(cases)} cases to {os.path.normpath(OUTPUT)}"
        f" ({dropped_or_rule} dropped for the OR rule)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
