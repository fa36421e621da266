#!/usr/bin/env bash
# fixture_home.sh NAME: builds a fixture home once per ctest run (FIXTURES_SETUP in
# tests/CMakeLists.txt) under $PX_FIXTURE_HOMES/NAME/home, its cluster stopped;
# lib.sh's restore_home copies it into a test's home. NAME:
#   empty          a home after `prognos db init` (every test starts from a copy)
#   serve-P-S      setup_model P S of serve_lib.sh: a fixed key, a generated system
#                  of P patients (seed S), loaded, readmission trained
#   clean          (FIXTURES_CLEANUP) removes the fixture homes and stops what a
#                  killed test left running

PX_FRESH_HOME=1
source "$(dirname "$0")/lib.sh"
: "${PX_FIXTURE_HOMES:?set PX_FIXTURE_HOMES}"
name=${1:?fixture name}
if [ "$name" = clean ]; then
    for d in "$PX_FIXTURE_HOMES"/*/; do [ -d "$d" ] && stop_clusters "$d"; done
    rm -rf "$PX_FIXTURE_HOMES"
    sweep_orphans
    # A failed test keeps its work directory for inspection (in /dev/shm: memory). Kept
    # ones older than a day go here, so that failed runs do not pile up in RAM. After
    # sweep_orphans only a running test's directory has an `owner` file (a failed test
    # removes its own, the sweep renames a killed one's); a directory made a moment ago
    # has none yet, and is new.
    old=0
    for d in "$PROGNOS_TEST_TMP"/*/; do
        [ ! -f "$d/owner" ] && [ -n "$(find "$d" -maxdepth 0 -mmin +1440)" ] || continue
        stop_clusters "$d"
        rm -rf "$d" && old=$((old + 1))
    done
    [ "$old" -eq 0 ] || echo "note: removed $old work directories of failed tests kept for more than a day" >&2
    ok "fixture homes removed"
    exit 0
fi
case "$name" in
    empty) px db init >/dev/null ;;
    serve-*-*)
        source "$(dirname "$0")/serve_lib.sh"
        IFS=- read -r _ patients seed <<<"$name"
        build_model_home "$patients" "$seed" ;;
    *) fail "unknown fixture '$name'" ;;
esac
px db stop >/dev/null
if [ -L "$PROGNOS_HOME/pg" ]; then
    echo "note: the server's user cannot reach $PROGNOS_TEST_TMP, so this fixture's cluster lives in $(readlink -f "$PROGNOS_HOME/pg"):" \
         "the tests make their homes themselves (slower). Build where that user can reach, or configure with -DPX_TEST_TMP=DIR." >&2
fi
mkdir -p "$PX_FIXTURE_HOMES"
chmod 755 "$PX_FIXTURE_HOMES"
rm -rf "$PX_FIXTURE_HOMES/$name"
mkdir -m 755 "$PX_FIXTURE_HOMES/$name"
touch "$PROGNOS_HOME/.fixture-complete"
mv "$PROGNOS_HOME" "$PX_FIXTURE_HOMES/$name/home"
ok "fixture home '$name' built"
