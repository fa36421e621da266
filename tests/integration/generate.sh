#!/usr/bin/env bash
# generate.sh: integration test of `prognos generate`. Checks determinism, the CSV
# layout, the value rules of the canonical loader, usage errors, and that every
# number in truth.json recomputes from the CSV files alone using its definitions.
set -euo pipefail

# The integration tests' one harness (lib.sh: work directory kept on failure,
# fail/ok/assert_exit); no database here, so no home is restored.
PX_FRESH_HOME=1
. "$(dirname "$0")/lib.sh"
T=$WORK
N=20000

# ---- usage -------------------------------------------------------------------
rc=0; px generate --help >"$T/help.out" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] && grep -q -- '--patients' "$T/help.out"; then ok "--help exits 0 with usage"
else fail "--help: exit $rc, output: $(head -c 300 "$T/help.out")"; fi

expect_exit() {  # expected-code message-regex description args...
    local want=$1 re=$2 what=$3; shift 3
    assert_exit "$want" px generate "$@"
    grep -Eq "$re" "$WORK/out" "$WORK/err" || fail "$what: message does not match /$re/: $(head -c 300 "$WORK/err")"
    ok "$what exits $want"
}
expect_exit 2 'patients.*-5' "--patients -5" --patients -5 --out "$T/bad"
expect_exit 2 'missing --out' "missing --out" --patients 10
expect_exit 2 'unknown option' "unknown option" --out "$T/bad" --frobnicate
expect_exit 2 'seed' "--seed abc" --out "$T/bad" --seed abc
expect_exit 2 'future' "--years ending this year" --out "$T/bad" --years "2019-$(date -u +%Y)"
touch "$T/afile"
expect_exit 1 'cannot create directory' "--out under a file" --out "$T/afile/sub" --patients 10
[ ! -e "$T/bad" ] || fail "a usage error created the output directory $T/bad"

# ---- determinism -----------------------------------------------------------------
px generate --patients $N --seed 7 --out "$T/a" --json >"$T/a.json"
px generate --patients $N --seed 7 --out "$T/b/nested" >"$T/b.txt"
px generate --patients $N --seed 8 --out "$T/c" >/dev/null
FILES="facilities.csv providers.csv patients.csv encounters.csv diagnoses.csv procedures.csv truth.json"
for f in $FILES; do
    [ -s "$T/a/$f" ] || fail "missing or empty output file $f"
done
same=1
for f in $FILES; do
    if ! cmp "$T/a/$f" "$T/b/nested/$f"; then fail "seed 7 twice: $f differs"; same=0; fi
done
[ "$same" -eq 1 ] && ok "same seed, byte-identical files"
differ=0
for f in patients.csv encounters.csv diagnoses.csv truth.json; do
    cmp -s "$T/a/$f" "$T/c/$f" || differ=$((differ + 1))
done
if [ "$differ" -eq 4 ]; then ok "another seed, different data"
else fail "seed 7 and seed 8: only $differ of 4 data files differ"; fi
if ls "$T/a" | grep -q '\.tmp$'; then fail "temporary files left: $(ls "$T/a")"; fi
grep -q "generated $N patients" "$T/b.txt" || fail "summary line: $(cat "$T/b.txt")"

# ---- the long tail of small facilities ---------------------------------------------
px generate --patients $N --seed 7 --small-facilities 300 --out "$T/s1" >/dev/null
px generate --patients $N --seed 7 --small-facilities 300 --out "$T/s2" >/dev/null
if diff -rq "$T/s1" "$T/s2" >/dev/null; then ok "--small-facilities: same seed, byte-identical files"
else fail "--small-facilities: seed 7 twice differs"; fi
expect_exit 2 'small-facilities' "--small-facilities -1" --out "$T/bad" --small-facilities -1
# The Python checks below run none of our code: the normal pass's (checks_values, lib.sh);
# the ASan pass runs every generation.
if ! checks_values; then ok "--small-facilities: generated (its rows checked in the normal pass)"
elif python3 - "$T/a" "$T/s1" <<'PY'
import csv, collections, json, sys
a, s = sys.argv[1], sys.argv[2]
rows = lambda d, f: list(csv.DictReader(open(f"{d}/{f}")))
ea, es = rows(a, "encounters.csv"), rows(s, "encounters.csv")
fa, fs = rows(a, "facilities.csv"), rows(s, "facilities.csv")
assert len(fs) == len(fa) + 300, (len(fa), len(fs))
assert fs[:len(fa)] == fa and es[:len(ea)] == ea, "the regular facilities or stays changed"
assert rows(s, "patients.csv")[:-300] == rows(a, "patients.csv"), "the regular patients changed"
small = {f["facility_id"] for f in fs[len(fa):]}
n = collections.Counter(e["facility_id"] for e in es if e["facility_id"] in small)
assert set(n) == small and min(n.values()) >= 1 and max(n.values()) <= 10, sorted(n.values())
t = json.load(open(f"{s}/truth.json"))
assert t["params"]["small_facilities"] == 300 and t["counts"]["facilities"] == len(fs)
assert all(f["planted"] == "none" for f in t["facilities"] if f["facility_id"] in small)
print(f"300 small facilities, {sum(n.values())} stays ({min(n.values())}-{max(n.values())} each); the rest unchanged")
PY
then ok "--small-facilities: 1-10 stays each, regular rows unchanged"
else fail "--small-facilities (see above)"; fi

# ---- headers -----------------------------------------------------------------------
check_header() {
    local got; got=$(head -n 1 "$T/a/$1")
    if [ "$got" = "$2" ]; then ok "header of $1"; else fail "header of $1: got '$got', expected '$2'"; fi
}
check_header facilities.csv "facility_id,name,type,state,beds"
check_header providers.csv "provider_id,name,specialty,facility_id"
check_header patients.csv "patient_id,mrn,ssn,first_name,last_name,birth_date,sex,zip,phone,email,death_date"
check_header encounters.csv "encounter_id,patient_id,facility_id,attending_id,admission_date,discharge_date,admission_type,admission_source,discharge_disposition,department,drg,total_cost"
check_header diagnoses.csv "encounter_id,seq,code_system,code,present_on_admission"
check_header procedures.csv "encounter_id,seq,code_system,code,procedure_date"

# ---- dates (awk) ---------------------------------------------------------------------
today=$(date -u +%F)
for f in patients.csv encounters.csv procedures.csv; do
    out=$(awk -F, -v today="$today" '
        NR > 1 { for (i = 1; i <= NF; i++)
                     if ($i ~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]$/ && $i > today) { bad++; ex = $0 } }
        END { if (bad) print bad " dates after " today ", e.g. " ex }' "$T/a/$f")
    if [ -n "$out" ]; then fail "$f: $out"; else ok "$f: no date after $today"; fi
done
out=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
               $c["admission_date"] > $c["discharge_date"] { bad++; ex = $0 }
               END { if (bad) print bad " stays discharged before admission, e.g. " ex }' "$T/a/encounters.csv")
if [ -n "$out" ]; then fail "encounters.csv: $out"; else ok "admission_date <= discharge_date"; fi

# ---- truth.json ----------------------------------------------------------------------
if err=$(python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$T/a/truth.json" 2>&1); then
    ok "truth.json parses"
else
    fail "truth.json does not parse: ${err##*$'\n'}"
fi

# ---- counts, value rules, truth.json recomputed from the CSVs (python) ------------------
if ! checks_values; then ok "truth.json written (its values recomputed in the normal pass)"
elif python3 - "$T/a" "$T/a.json" "$N" <<'PY'
import csv, datetime, json, math, re, sys
from collections import defaultdict

d, summary_path, n_patients = sys.argv[1], sys.argv[2], int(sys.argv[3])
bad = []
def check(cond, msg):
    if not cond: bad.append(msg)
def rows(name):
    with open(f"{d}/{name}", newline="") as f:
        return list(csv.DictReader(f))
day = lambda s: datetime.date.fromisoformat(s).toordinal()

truth = json.load(open(f"{d}/truth.json"))
summary = json.load(open(summary_path))
fac, prov, pat = rows("facilities.csv"), rows("providers.csv"), rows("patients.csv")
enc, dx, px = rows("encounters.csv"), rows("diagnoses.csv"), rows("procedures.csv")
counts = truth["counts"]
for key, got in [("patients", len(pat)), ("encounters", len(enc)), ("diagnoses", len(dx)),
                 ("procedures", len(px)), ("facilities", len(fac)), ("providers", len(prov))]:
    check(counts[key] == got, f"truth counts.{key} = {counts[key]}, files have {got}")
    check(summary[key] == got, f"--json {key} = {summary[key]}, files have {got}")
check(len(pat) == n_patients, f"{len(pat)} patients, asked for {n_patients}")
check(len(fac) == 40 and len(prov) == 400, f"{len(fac)} facilities, {len(prov)} providers")
ratio = len(enc) / len(pat)
check(3.0 <= ratio <= 5.5, f"{ratio:.2f} encounters per patient, expected about 4")
check(4.5 <= len(dx) / len(enc) <= 6.5, f"{len(dx) / len(enc):.2f} diagnoses per stay, expected 5-6")
check(1.1 <= len(px) / len(enc) <= 1.9, f"{len(px) / len(enc):.2f} procedures per stay, expected ~1.5")

# identifiers and fields
def unique(rs, col, what):
    vals = [r[col] for r in rs]
    check(len(set(vals)) == len(vals), f"{what}: {len(vals) - len(set(vals))} duplicate {col}")
unique(pat, "patient_id", "patients"); unique(pat, "mrn", "patients"); unique(pat, "ssn", "patients")
unique(pat, "email", "patients"); unique(pat, "phone", "patients"); unique(enc, "encounter_id", "encounters")
unique(fac, "facility_id", "facilities"); unique(prov, "provider_id", "providers")
def npi_ok(s):
    digits = [int(c) for c in "80840" + s[:9]]
    total = 0
    for i, v in enumerate(reversed(digits)):
        total += (v * 2 - 9 if v * 2 > 9 else v * 2) if i % 2 == 0 else v
    return (10 - total % 10) % 10 == int(s[9])
check(all(re.fullmatch(r"\d{10}", p["provider_id"]) and npi_ok(p["provider_id"]) for p in prov), "bad NPI")
for p in pat:
    ok = (re.fullmatch(r"\d{3}-\d{2}-\d{4}", p["ssn"]) and p["ssn"][:3] not in ("000", "666")
          and p["ssn"][0] != "9" and re.fullmatch(r"\d{5}", p["zip"]) and p["sex"] in ("F", "M")
          and re.fullmatch(r"\d{3}-\d{3}-\d{4}", p["phone"]) and re.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.(com|org|net)", p["email"]))
    if not ok: check(False, f"bad patient identifiers: {p}"); break
female = sum(p["sex"] == "F" for p in pat) / len(pat)
check(0.48 <= female <= 0.56, f"female share {female:.3f}, expected ~0.52")
fac_ids = {f["facility_id"] for f in fac}
check(all(f["type"] in ("acute", "critical_access") and 1 <= int(f["beds"]) <= 5000 for f in fac), "facility type/beds")

pt = {p["patient_id"]: p for p in pat}
stays = defaultdict(list)
byenc = {}
emerg = transfer = 0
ages = []
for e in enc:
    p = pt.get(e["patient_id"])
    check(p is not None, f"encounter {e['encounter_id']}: unknown patient")
    if p is None: continue
    a, b = day(e["admission_date"]), day(e["discharge_date"])
    age = int(e["admission_date"][:4]) - int(p["birth_date"][:4])
    ages.append(age)
    cost = float(e["total_cost"])
    if not (0 <= b - a <= 365 and 18 <= age <= 120 and 0 <= cost <= 1e7 and re.fullmatch(r"\d+\.\d\d", e["total_cost"])
            and e["facility_id"] in fac_ids and re.fullmatch(r"\d{3}", e["drg"])):
        check(False, f"bad encounter {e}"); break
    if p["death_date"]:
        dd = day(p["death_date"])
        check(a <= dd, f"{e['encounter_id']}: admitted after death")
        check(e["discharge_disposition"] != "expired" or dd == b, f"{e['encounter_id']}: expired but death_date {p['death_date']}")
    else:
        check(e["discharge_disposition"] != "expired", f"{e['encounter_id']}: expired without death_date")
    emerg += e["admission_type"] == "emergency"
    transfer += e["discharge_disposition"] == "transfer_acute"
    rec = {"adm": a, "dis": b, "e": e, "codes": set()}
    stays[e["patient_id"]].append(rec)
    byenc[e["encounter_id"]] = rec
mean_age = sum(ages) / len(ages)
check(60 <= mean_age <= 72, f"mean age at admission {mean_age:.1f}, expected ~65")
check(0.5 <= emerg / len(enc) <= 0.72, f"emergency share {emerg / len(enc):.3f}, expected ~0.6")
check(0.005 <= transfer / len(enc) <= 0.04, f"transfer share {transfer / len(enc):.3f}, expected ~0.02")
for pid, p in pt.items():
    if p["death_date"] and pid in stays:
        gap = day(p["death_date"]) - max(s["adm"] for s in stays[pid])
        check(0 <= gap <= 30, f"{pid}: death {gap} days after the last admission")
check(all(pid in stays for pid in pt), "a patient without stays")

dx_re, pcs_re = re.compile(r"[A-TV-Z]\d[0-9A-Z]\.[0-9A-Z]{1,4}"), re.compile(r"[0-9A-HJ-NP-Z]{7}")
seqs = defaultdict(list)
for r in dx:
    if not (dx_re.fullmatch(r["code"]) and r["code_system"] == "icd10" and r["present_on_admission"] in "YNUW"):
        check(False, f"bad diagnosis row {r}"); break
    byenc[r["encounter_id"]]["codes"].add(r["code"].replace(".", ""))
    seqs[r["encounter_id"]].append(int(r["seq"]))
check(all(sorted(s) == list(range(1, len(s) + 1)) for s in seqs.values()), "diagnosis seq not 1..n")
check(len(seqs) == len(enc), f"{len(enc) - len(seqs)} stays without diagnoses")
poa_y = sum(r["present_on_admission"] == "Y" for r in dx) / len(dx)
check(poa_y >= 0.85, f"present_on_admission Y share {poa_y:.3f}")
for r in px:
    s = byenc.get(r["encounter_id"])
    if not (s and pcs_re.fullmatch(r["code"]) and s["adm"] <= day(r["procedure_date"]) <= s["dis"]):
        check(False, f"bad procedure row {r}"); break

# the models: covariates and outcomes exactly as truth.json defines them
cm = [(c["name"], tuple(c["code_prefixes"])) for c in truth["comorbidities"]]
feff = {f["facility_id"]: f["effects"] for f in truth["facilities"]}
# the feature sets' cohorts (features/sql): follow-up to the data's last admission
data_end = max(s["adm"] for ss in stays.values() for s in ss)
check(day(truth["period"]["data_last_admission_date"]) == data_end,
      f"data_last_admission_date {truth['period']['data_last_admission_date']}")
pop = {"readmission": [], "mortality": [], "los": []}
for pid, ss in stays.items():
    p = pt[pid]
    death = day(p["death_date"]) if p["death_date"] else None
    adms = [s["adm"] for s in ss]
    for s in ss:
        e = s["e"]
        x = {"age_per_10y": (int(e["admission_date"][:4]) - int(p["birth_date"][:4]) - 65) / 10,
             "female": 1.0 if p["sex"] == "F" else 0.0,
             "prior_adm_12m": float(min(5, sum(s["adm"] - 365 <= a2 <= s["adm"] - 1 for a2 in adms))),
             "emergency": 1.0 if e["admission_type"] == "emergency" else 0.0}
        for name, pre in cm:
            x[name] = 1.0 if any(c.startswith(pre) for c in s["codes"]) else 0.0
        ps = {}
        for m, spec in truth["models"].items():
            eta = spec["intercept"]
            for cov in truth["covariates"]:
                eta += spec["coefficients"][cov["name"]] * x[cov["name"]]
            eta += feff[e["facility_id"]][m]
            ps[m] = math.exp(eta) if m == "los" else 1.0 / (1.0 + math.exp(-eta))
        mort = death is not None and 0 <= death - s["adm"] <= 30
        if s["adm"] + 30 <= data_end:
            pop["mortality"].append((ps["mortality"], int(mort), e["facility_id"], s["adm"]))
        if e["discharge_disposition"] == "expired": continue
        pop["los"].append((ps["los"], s["dis"] - s["adm"], e["facility_id"]))
        if e["discharge_disposition"] not in ("transfer_acute", "ama") and s["dis"] + 30 <= data_end:
            y = any(1 <= a2 - s["dis"] <= 30 for a2 in adms)
            pop["readmission"].append((ps["readmission"], int(y), e["facility_id"], s["dis"]))

def auc(v):
    v = sorted(v, key=lambda t: t[0])
    rank_sum = n1 = 0.0
    i = 0
    while i < len(v):
        j, pos = i, 0
        while j < len(v) and v[j][0] == v[i][0]:
            pos += v[j][1]; j += 1
        rank_sum += pos * (i + 1 + j) / 2; n1 += pos; i = j
    n0 = len(v) - n1
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)

for m, v in pop.items():
    obs = truth["models"][m]["observed"]
    check(obs["stays"] == len(v), f"{m}: truth has {obs['stays']} stays in the population, recomputed {len(v)}")
    if m == "los":
        mean = sum(t[1] for t in v) / len(v)
        check(abs(obs["mean_los_days"] - mean) < 1e-6, f"los: truth mean {obs['mean_los_days']}, recomputed {mean}")
        exp_mean = sum(t[0] for t in v) / len(v)
        check(abs(obs["expected_mean_los_days"] - exp_mean) < 2e-6, f"los: expected mean {obs['expected_mean_los_days']} vs {exp_mean}")
        check(3.5 <= mean <= 6.0, f"mean LOS {mean:.2f}, expected 4-5")
        continue
    events = sum(t[1] for t in v)
    check(obs["events"] == events, f"{m}: truth has {obs['events']} events, recomputed {events}")
    rate = sum(t[0] for t in v) / len(v)
    check(abs(obs["expected_rate"] - rate) < 2e-6, f"{m}: expected_rate {obs['expected_rate']}, recomputed {rate:.7f}")
    a = auc(v)
    check(abs(obs["auc_true_p"] - a) < 2e-6, f"{m}: auc_true_p {obs['auc_true_p']}, recomputed {a:.7f}")
    # registry/train.c's temporal holdout: prediction day >= the day at floor(0.75 n)
    cut = sorted(t[3] for t in v)[min(int(math.floor(len(v) * 0.75)), len(v) - 1)]
    hv = [t for t in v if t[3] >= cut]
    h = obs["holdout"]
    check(h["stays"] == len(hv) and h["events"] == sum(t[1] for t in hv), f"{m}: holdout {h['stays']}/{h['events']} vs {len(hv)}")
    check(abs(h["auc_true_p"] - auc(hv)) < 2e-6, f"{m}: holdout auc_true_p {h['auc_true_p']}, recomputed {auc(hv):.7f}")
    lo, hi = (0.12, 0.18) if m == "readmission" else (0.05, 0.09)
    check(lo <= obs["rate"] <= hi, f"{m}: rate {obs['rate']}, expected {lo}-{hi}")

# planted facilities: listed, labelled, and visible in observed / expected-without-effect
worse, better = truth["planted_worse"], truth["planted_better"]
check(len(worse) == 4 and len(better) == 4, f"planted: {len(worse)} worse, {len(better)} better; expected 4 and 4")
label = {f["facility_id"]: f["planted"] for f in truth["facilities"]}
check(all(label.get(f) == "worse" and f in fac_ids for f in worse), f"planted_worse {worse} vs facilities {label}")
check(all(label.get(f) == "better" and f in fac_ids for f in better), f"planted_better {better}")
check(sum(v == "none" for v in label.values()) == 32, "expected 32 unplanted facilities")
for fid in worse + better:
    check(abs(feff[fid]["readmission"]) >= 0.5 and abs(feff[fid]["mortality"]) >= 0.5, f"{fid}: effects {feff[fid]}")
for m in ("readmission", "mortality"):
    for group, cmpf in (("worse", lambda r: r > 1.25), ("better", lambda r: r < 0.8)):
        ids = worse if group == "worse" else better
        o = sum(t[1] for t in pop[m] if t[2] in ids)
        ex = sum(f[m]["expected_without_effect"] for f in truth["facilities"] if f["facility_id"] in ids)
        check(cmpf(o / ex), f"{m}: planted-{group} O/E = {o}/{ex:.1f} = {o / ex:.2f}")

if bad:
    for msg in bad[:30]: print("  " + msg, file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(enc)} stays; readmission {truth['models']['readmission']['observed']['rate']}, "
      f"mortality {truth['models']['mortality']['observed']['rate']}, "
      f"mean LOS {truth['models']['los']['observed']['mean_los_days']}; truth.json recomputes from the CSVs")
PY
then ok "value rules and truth.json"
else fail "value rules or truth.json (see above)"; fi

echo "generate.sh: all checks passed"
