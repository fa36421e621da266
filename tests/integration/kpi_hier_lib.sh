# kpi_hier_lib.sh: the data of kpi_hier.sh and kpi_hier_boot.sh, and checks kpi_hier.sh and
# kpi_report_size.sh share (source after lib.sh).
# kpi_hier_data DIR: a generated canonical extract (6,000 patients, 8 facilities, seed 5)
# whose every other stay is moved to a tiny facility T0001, T0002, ... of 1, 2, ..., 10,
# 1, ... stays (~2,000 of them), loaded into $PROGNOS_HOME without rejects, feature sets
# built. Sets tiny (the number of tiny facilities).
kpi_hier_data() { # dir
    local d=$1
    px generate --patients 6000 --facilities 8 --seed 5 --out "$d" >/dev/null
    awk -F, -v OFS=, 'NR == 1 { print; next }
        NR % 2 == 0 { if (left == 0) { k++; left = (k - 1) % 10 + 1 } $3 = sprintf("T%04d", k); left-- }
        { print }' "$d/encounters.csv" > "$d/enc.csv"
    mv "$d/enc.csv" "$d/encounters.csv"
    tiny=$(awk -F, 'NR > 1 && $3 ~ /^T/ { print $3 }' "$d/encounters.csv" | sort -u | wc -l)
    awk -F, 'NR > 1 && $3 ~ /^T/ { print $3 }' "$d/encounters.csv" | sort -u |
        awk '{ printf "%s,Small Hospital %s,acute,KS,12\n", $1, $1 }' >> "$d/facilities.csv"
    [ "$tiny" -ge 1500 ] || fail "the remap made only $tiny tiny facilities"
    assert_exit 0 px etl load --format canonical --source "$d" --quiet
    assert_eq "$(sql "SELECT count(*) FROM etl.rejects")" 0 "remapped extract loads without rejects"
    px features build --set all >/dev/null
}

hier_file() { echo "$PROGNOS_HOME/registry/$1/$2/hierarchical.json"; }
# hier_tamper_fails MODEL VERSION: a KPI run fails, naming the file, once the stored
# hierarchical.json of MODEL vVERSION is edited (its tau); the file is put back after
hier_tamper_fails() {
    local f; f=$(hier_file "$1" "$2")
    cp "$f" "$WORK/h.json"
    chmod u+w "$f" 2>/dev/null || true
    sed -i '0,/"tau":/s/"tau":\t*[0-9.e+-]*/"tau":\t0.123/' "$f"
    cmp -s "$f" "$WORK/h.json" && fail "the tampering did not change the file"
    assert_exit 1 px kpi compute --period all
    grep -q "hierarchical.json" "$WORK/err" || fail "a tampered hierarchical.json is not named: $(cat "$WORK/err")"
    cp "$WORK/h.json" "$f"
}
