#!/usr/bin/env bash
# After loading inputs with known identifiers (the canonical-bad fixture, a
# generated dataset, a SynPUF sample), none of those identifiers appears in a
# full dump of the warehouse, in etl.rejects, or in any log, in plaintext or as
# a plain (unkeyed) SHA-256.
. "$(dirname "$0")/lib.sh"

px generate --patients 2000 --seed 11 --out "$WORK/gen" >/dev/null
px etl load --format canonical --source "$FIXTURES/canonical-bad" --max-reject-rate 100 --quiet >"$WORK/load1.out" 2>&1
px etl load --format canonical --source "$WORK/gen" --quiet >"$WORK/load2.out" 2>&1
SYN="$SYNPUF/sample-1"
px etl load --format synpuf --source "$SYN" --quiet >"$WORK/load3.out" 2>&1
px etl status >"$WORK/status.out"
px etl status --json >"$WORK/status.json"
[ "$(sql 'SELECT count(*) FROM etl.rejects')" -gt 0 ] || fail "no rejects to check"

# identifiers: every identifier column of the canonical files, SynPUF IDs
python3 - "$FIXTURES/canonical-bad" "$WORK/gen" "$SYN" > "$WORK/ids.txt" <<'PY'
import csv, os, re, sys
ident = {"patients.csv": ["patient_id", "mrn", "ssn", "first_name", "last_name", "phone", "email"],
         "encounters.csv": ["encounter_id", "patient_id"]}
out = set()
for d in sys.argv[1:3]:
    for f, cols in ident.items():
        with open(os.path.join(d, f), encoding="utf-8", errors="replace", newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                if d == sys.argv[2] and i >= 400: break
                for c in cols:
                    v = (row.get(c) or "").strip()
                    if len(v) >= 4:
                        out.add(("name:" if c.endswith("_name") else "") + v)
                        if c in ("ssn", "phone"): out.add(re.sub(r"\D", "", v))
if os.path.isdir(sys.argv[3]):
    for f in sorted(os.listdir(sys.argv[3])):
        with open(os.path.join(sys.argv[3], f), newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                if i >= 300: break
                out.add(row["DESYNPUF_ID"])
                if "CLM_ID" in row: out.add(row["CLM_ID"])
for v in sorted(out): print(v)
PY
n=$(wc -l < "$WORK/ids.txt")
[ "$n" -gt 1000 ] || fail "too few identifiers collected ($n)"

# patterns: identifiers in plaintext (names as whole values), and their SHA-256
python3 - "$WORK/ids.txt" > "$WORK/patterns.txt" <<'PY'
import hashlib, sys
for line in open(sys.argv[1], encoding="utf-8"):
    v = line.rstrip("\n")
    name = v.startswith("name:")
    if name: v = v[5:]
    for form in {v, v.lower(), v.upper()}:
        h = hashlib.sha256(form.encode()).hexdigest()
        print(h); print(h.upper())
    if name:
        print("\t" + v + "\t"); print('"' + v + '"')   # a whole COPY field or JSON string
    else:
        print(v)
PY

DUMP="$WORK/warehouse.sql"
pg_dump --no-owner "$(px db url)" > "$DUMP"
[ "$(grep -c 'COPY etl.rejects' "$DUMP")" -eq 1 ] || fail "the dump lacks etl.rejects"
scan() { # file...
    local hits
    hits=$(grep -a -F -o -f "$WORK/patterns.txt" "$@" | head -5 || true)
    [ -z "$hits" ] || fail "identifiers found in $*: $(echo "$hits" | tr '\n\t' ' ')"
}
scan "$DUMP"
ok "full dump ($(wc -c < "$DUMP") bytes) holds none of $n identifiers, plain or SHA-256"
psql -X -At "$(px db url)" -c "SELECT row_data::text, detail FROM etl.rejects" > "$WORK/rejects.txt"
scan "$WORK/rejects.txt"
ok "etl.rejects holds none ($(wc -l < "$WORK/rejects.txt") rows)"
logs=("$PROGNOS_HOME"/log/* "$PROGNOS_HOME"/pg/server.log "$WORK"/*.out "$WORK/status.json")
scan "${logs[@]}"
ok "logs and command output hold none (${#logs[@]} files)"

# the key itself is nowhere in the warehouse
key=$(cat "$PROGNOS_HOME/secret.key")
grep -q "$key" "$DUMP" && fail "the pseudonymization key is in the dump"
# pseudonyms are keyed: another key gives other pseudonyms for the same patient
p1=$(sql "SELECT patient_id FROM wh.dim_patient WHERE birth_year = 1950 AND zip3 = '537'")
export PROGNOS_HOME="$WORK/home2"
px etl load --format canonical --source "$FIXTURES/canonical-bad" --max-reject-rate 100 --quiet >/dev/null 2>&1
p2=$(sql "SELECT patient_id FROM wh.dim_patient WHERE birth_year = 1950 AND zip3 = '537'")
[ -n "$p1" ] && [ -n "$p2" ] && [ "$p1" != "$p2" ] || fail "pseudonyms do not depend on the key ($p1 / $p2)"
ok "pseudonyms depend on the installation's key"
