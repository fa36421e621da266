#!/usr/bin/env python3
"""export_check.py: checks a `prognos export` directory against its source, independently
of the C code (export.sh drives it). Usage:

  export_check.py DIR SOURCE.tsv IDS.txt [--key FILE --max-shift D] [--min-cell K] [--min-zip3 N]
                  [--dates shift|year]

SOURCE.tsv: the feature table's rows as psql -At -F '\t' prints them:
  patient_id, encounter_id, admission_date, discharge_date, age_years, facility_id, zip3 (warehouse), los_days|''
IDS.txt: one plaintext identifier or pseudonym a line; none may appear in any file of DIR
(substring; 64-hex file hashes in the manifest and SHA256SUMS are masked first, and purely
numeric identifiers are compared with whole numbers only, since counts are numbers too).
Every failed check prints 'FAIL: ...' and the script exits 1."""
import collections
import csv
import datetime
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


args = sys.argv[1:]
d, source, ids_file = args[0], args[1], args[2]
opt = {"--key": None, "--max-shift": "365", "--min-cell": "11", "--min-zip3": "20", "--dates": "shift"}
for i in range(3, len(args), 2):
    opt[args[i]] = args[i + 1]
K, N = int(opt["--min-cell"]), int(opt["--min-zip3"])

files = sorted(os.listdir(d))
data_name = "data.jsonl" if "data.jsonl" in files else "data.csv"
want = sorted([data_name, "data_dictionary.csv", "manifest.json", "SHA256SUMS"])
if files != want:
    fail(f"files {files}, expected {want} (no temporary file left)")

# ---- the data ------------------------------------------------------------------
if data_name == "data.csv":
    with open(os.path.join(d, data_name), newline="") as f:
        rows = list(csv.DictReader(f))
    cols = list(rows[0].keys()) if rows else []
else:
    with open(os.path.join(d, data_name)) as f:
        rows = [json.loads(line) for line in f]
    cols = list(rows[0].keys()) if rows else []
    rows = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in rows]

with open(os.path.join(d, "data_dictionary.csv"), newline="") as f:
    dictionary = list(csv.DictReader(f))
if [r["name"] for r in dictionary] != cols:
    fail("the dictionary does not list the data's columns in order")
for r in dictionary:
    if not r["type"] or not r["transformation"]:
        fail(f"dictionary entry of {r['name']} has no type or transformation")

src = []
with open(source) as f:
    for line in f:
        p = line.rstrip("\n").split("\t")
        src.append(dict(pid=p[0], eid=p[1], adm=p[2], dis=p[3], age=int(p[4]), fac=p[5], zip3=p[6], los=p[7]))
if len(rows) != len(src):
    fail(f"{len(rows)} rows exported, the feature table holds {len(src)}")

# ---- identifiers -----------------------------------------------------------------
ids = [s for s in open(ids_file).read().split("\n") if s]
blob = ""
for name in files:
    text = open(os.path.join(d, name), encoding="utf-8").read()
    blob += re.sub(r"[0-9a-f]{64}", "#", text) + "\n"
# a number is a whole run of digits, not the digits inside a longer token: a pseudonym's
# hex ("...-8fa54d33155c") holds runs such as 33155 that may equal a ZIP code or another
# numeric identifier, which an export that leaked the pseudonym must be reported for (by
# the substring search below), not for the ZIP code
numbers = set(re.findall(r"(?<![0-9A-Za-z])\d+(?![0-9A-Za-z])", blob))
words = set(re.findall(r"[A-Za-z]+", blob))
others = []
for s in ids:
    if s.isdigit():
        if s in numbers:
            fail(f"identifier {s} appears as a number in the export")
    elif s.isalpha():
        if s in words:
            fail(f"name {s} appears as a word in the export")
    else:
        others.append(s)
# the rest as substrings, by grep -F (Aho-Corasick: fast for tens of thousands of patterns)
with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "blob"), "w") as f:
        f.write(blob)
    with open(os.path.join(tmp, "ids"), "w") as f:
        f.write("\n".join(others) + "\n")
    g = subprocess.run(["grep", "-F", "-o", "-m", "5", "-f", os.path.join(tmp, "ids"), os.path.join(tmp, "blob")],
                       capture_output=True, text=True)
    if g.returncode == 0:
        fail(f"identifiers in the export: {g.stdout.split()[:5]}")
    if g.returncode != 1:
        fail(f"grep failed: {g.stderr}")
print(f"  {len(ids)} identifiers and pseudonyms checked: none in the export")

man = json.load(open(os.path.join(d, "manifest.json")))
if man["rows"] != len(rows):
    fail(f"manifest rows {man['rows']} != {len(rows)}")
for fe in man["files"]:
    h = hashlib.sha256(open(os.path.join(d, fe["name"]), "rb").read()).hexdigest()
    if h != fe["sha256"]:
        fail(f"manifest sha256 of {fe['name']} does not match the file")
for key in ("query", "etl_batches", "feature_build", "parameters", "exported_at"):
    if key not in man:
        fail(f"manifest has no {key}")

# ---- ages ------------------------------------------------------------------------
ages = collections.Counter(r["age_years"] for r in rows)
for a in ages:
    if a not in ("90+", "suppressed", "") and int(a) > 89:
        fail(f"age {a} exported")
old = sum(1 for s in src if s["age"] > 89)
if ages.get("90+", 0) != old:
    fail(f"{ages.get('90+', 0)} rows aged 90+, the source has {old} over 89")
if old == 0:
    fail("the source has no patient over 89: the test does not test the grouping")

# ---- small cells: each shown level has >= K rows, the suppressed ones together >= K ----
supp_cols = [r["name"] for r in dictionary if "suppressed" in r["transformation"]]
any_supp = 0
for c in supp_cols:
    cnt = collections.Counter(r[c] for r in rows if r[c] != "")
    for lvl, n in cnt.items():
        if n < K and not (lvl == "suppressed" and len(cnt) == 1):
            fail(f"column {c} level {lvl!r} has {n} rows < {K}")
    any_supp += cnt.get("suppressed", 0)
fac_src = collections.Counter(s["fac"] for s in src)
small = {f for f, n in fac_src.items() if n < K}
shown = {r["facility_id"] for r in rows}
if small & shown:
    fail(f"small facilities shown: {sorted(small & shown)}")
print(f"  small cells: {len(small)} facilities under {K} rows suppressed; {any_supp} suppressed values in all")

# ---- ZIP3 -------------------------------------------------------------------------
if "zip3" in cols:
    pats = collections.defaultdict(set)
    for r in rows:
        pats[r["zip3"]].add(r["study_id"])
    for z, p in pats.items():
        if z not in ("000", "") and len(p) < N:
            fail(f"ZIP3 {z} has {len(p)} patients < {N}")
    zsrc = collections.defaultdict(set)
    for s in src:
        zsrc[s["zip3"]].add(s["pid"])
    smallz = {z for z, p in zsrc.items() if len(p) < N and z}
    if smallz & set(pats):
        fail(f"small ZIP3 areas shown: {sorted(smallz & set(pats))}")

# ---- dates: the patient partition and the per-patient offsets ----------------------
D = int(opt["--max-shift"])
day = datetime.date.fromisoformat
by_study = collections.defaultdict(list)
by_pid = collections.defaultdict(list)
if opt["--dates"] == "shift":
    key = open(opt["--key"], "rb").read() if opt["--key"] else None
    for r in rows:
        by_study[r["study_id"]].append((day(r["admission_date"]), day(r["discharge_date"])))
    shifts = set()
    for s in src:
        if key:
            mac = hmac.new(key, s["pid"].encode(), hashlib.sha256).digest()
            k = int.from_bytes(mac[:4], "big") % D + 1
            shifts.add(k)
        else:
            k = 0
        by_pid[s["pid"]].append((day(s["adm"]) - datetime.timedelta(k), day(s["dis"]) - datetime.timedelta(k)))
    if key:
        # exact: the exported dates are the source dates moved back by HMAC(key, patient) mod D + 1
        got = collections.Counter(tuple(sorted(v)) for v in by_study.values())
        exp = collections.Counter(tuple(sorted(v)) for v in by_pid.values())
        if got != exp:
            fail("exported dates per patient differ from the source moved back by the keyed offsets")
        if len(shifts) < min(D, len(by_pid)) // 2:
            fail(f"only {len(shifts)} distinct offsets over {len(by_pid)} patients")
        print(f"  dates: every patient's stays moved back by its keyed offset ({len(shifts)} distinct offsets)")
    else:
        # intervals within a patient preserved: stays relative to the patient's first
        def rel(v):
            v = sorted(v)
            return tuple((a - v[0][0]).days for a, _ in v) + tuple((b - a).days for a, b in v)
        got = collections.Counter(rel(v) for v in by_study.values())
        exp = collections.Counter(rel(v) for v in by_pid.values())
        if got != exp:
            fail("intervals within patients are not preserved")
        # and the dates moved (offsets are 1..D days)
        moved = sum(1 for r, s in zip(sorted(r["admission_date"] for r in rows), sorted(s["adm"] for s in src)) if r != s)
        if moved == 0:
            fail("dates were not shifted")
        print("  dates: intervals within every patient preserved")
else:
    ys = collections.Counter((int(r["admission_date_year"]), int(r["discharge_date_year"])) for r in rows)
    ye = collections.Counter((day(s["adm"]).year, day(s["dis"]).year) for s in src)
    if ys != ye:
        fail("years differ from the source")
    for r in rows:
        by_study[r["study_id"]].append((int(r["admission_date_day"]), int(r["discharge_date_day"])))
    for s in src:
        by_pid[s["pid"]].append((day(s["adm"]), day(s["dis"])))
    def rel0(v):
        v = sorted(v)
        return tuple(((a - v[0][0]).days, (b - v[0][0]).days) for a, b in v)
    got = collections.Counter(tuple(sorted(v)) for v in by_study.values())
    exp = collections.Counter(rel0(v) for v in by_pid.values())
    if got != exp:
        fail("relative days differ from the source")
    if "admission_date" in cols or "discharge_date" in cols:
        fail("full dates exported with --dates year")
    print("  dates: years and relative days match the source")
if len(by_study) != len(by_pid):
    fail(f"{len(by_study)} study ids for {len(by_pid)} patients")
print(f"ok {d}: {len(rows)} rows, {len(by_study)} patients, {len(cols)} columns")
