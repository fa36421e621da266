#!/usr/bin/env python3
# train_split_check.py: recomputes a version's holdout split independently of
# registry/train.c, from the feature table's rows (patient pseudonym, prediction
# date, label, female, age) printed by psql as CSV on stdin, and compares it with
# the version's split.json and metrics.json (row and event counts overall, by sex
# and by age band). Usage: train_split_check.py SPLIT_JSON METRICS_JSON < rows.csv
import csv, datetime, json, math, sys

M64 = (1 << 64) - 1
SALT = 0x70726F676E6F7331  # "prognos1", as in registry/train.c


def mix64(z):  # splitmix64 finalizer
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


split, metrics = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rows = []
for pid, day, y, female, age in csv.reader(sys.stdin):
    d = (datetime.date.fromisoformat(day) - datetime.date(1970, 1, 1)).days
    g = int(pid.replace("-", "")[:16], 16)  # the uuid pseudonym's first 64 bits
    rows.append((g, d, float(y), female, float(age)))
n = len(rows)
days = sorted(r[1] for r in rows)
q = min(int(math.floor(n * (1.0 - split["holdout_time_share"]))), n - 1)
cutoff = days[q]
hold = lambda g: g != 0 and (mix64(g ^ SALT) >> 11) * 2.0**-53 < split["holdout_patient_share"]
test = [r for r in rows if r[1] >= cutoff and hold(r[0])]
train = [r for r in rows if r[1] < cutoff and not hold(r[0])]


def band(a):
    return "<50" if a < 50 else "50-64" if a < 65 else "65-74" if a < 75 else "75-84" if a < 85 else "85+"


bad = []
def same(what, got, want):
    if got != want:
        bad.append(f"{what}: registry {got}, recomputed {want}")


same("rows", split["rows"], n)
same("holdout_from", split["holdout_from"], str(datetime.date(1970, 1, 1) + datetime.timedelta(days=cutoff)))
same("train_rows", split["train_rows"], len(train))
same("holdout_rows", split["holdout_rows"], len(test))
same("train_events", split["train_events"], sum(r[2] for r in train))
same("holdout_events", split["holdout_events"], sum(r[2] for r in test))
same("overall n", metrics["overall"]["n"], len(test))
for key, sel in (("F", lambda r: r[3] in ("1", "t")), ("M", lambda r: r[3] in ("0", "f"))):
    sub = [r for r in test if sel(r)]
    m = metrics["by_sex"][key]
    if m is not None:
        same(f"by_sex {key} n", m["n"], len(sub))
        same(f"by_sex {key} events", m["events"], sum(r[2] for r in sub))
    elif len(sub) >= 20 and 0 < sum(r[2] for r in sub) < len(sub):
        bad.append(f"by_sex {key}: null in the registry, {len(sub)} rows recomputed")
for b in ("<50", "50-64", "65-74", "75-84", "85+"):
    sub = [r for r in test if band(r[4]) == b]
    m = metrics["by_age_band"][b]
    if m is not None:
        same(f"by_age_band {b} n", m["n"], len(sub))
        same(f"by_age_band {b} events", m["events"], sum(r[2] for r in sub))
    elif len(sub) >= 20 and 0 < sum(r[2] for r in sub) < len(sub):
        bad.append(f"by_age_band {b}: null in the registry, {len(sub)} rows recomputed")
if bad:
    print("\n".join(bad))
    sys.exit(1)
print(f"split recomputed: {len(train)} training, {len(test)} holdout rows from {cutoff}; subgroups agree")
