# retention_lib.sh: shared by the retention tests (source after lib.sh).

# A load of stays admitted in YEAR, which retention removed, is refused with the message
# that names it, and loads nothing: 20 generated patients of that year, their ids made new.
refused_load_of_removed_year() { # year
    local y=$1 n
    px generate --patients 20 --seed 32 --years "$y-$y" --out "$WORK/old" >/dev/null
    sed -i 's/^P0/Q0/; s/,P0/,Q0/' "$WORK/old/patients.csv" "$WORK/old/encounters.csv"
    sed -i 's/^E0/F0/' "$WORK/old/encounters.csv" "$WORK/old/diagnoses.csv" "$WORK/old/procedures.csv"
    n=$(sql "SELECT count(*) FROM wh.fact_encounter")
    assert_exit 1 px etl load --format canonical --source "$WORK/old" --quiet
    grep -q "cannot load stays admitted in $y into wh.fact_encounter: retention removed that year" "$WORK/err" ||
        fail "load of a removed year: $(cat "$WORK/err")"
    assert_eq "$(sql "SELECT count(*) FROM wh.fact_encounter")" "$n" "stays after the refused load"
}
