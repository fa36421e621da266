#!/usr/bin/env bash
# The embedded warehouse: init, status, url, psql, migrate (idempotent), stop,
# start-on-demand, the key file's mode, Unix socket only, PROGNOS_DB, --help.
PX_FRESH_HOME=1   # tests db init itself
. "$(dirname "$0")/lib.sh"

assert_exit 0 px db init
[ "$(stat -c %a "$PROGNOS_HOME/secret.key")" = 600 ] || fail "secret.key is not mode 0600"
ok "db init creates a 0600 key"
assert_exit 0 px db status
grep -q running "$WORK/out" || fail "status does not say running"
# the migrations live in the folders that own their schemas (<folder>/sql/NNN_name.sql)
newest=$(ls "$PROGNOS_SRC"/*/sql/[0-9]*.sql | sed 's|.*/0*\([0-9]*\)_.*|\1|' | sort -n | tail -1)
assert_eq "$(sql 'SELECT max(version) FROM public.prognos_migrations')" "$newest" "schema version (the newest <folder>/sql migration)"
assert_eq "$(sql "SELECT current_setting('listen_addresses')")" "" "listen_addresses (no TCP)"
ok "server runs, Unix socket only, schema migrated"
assert_exit 0 px db migrate
assert_eq "$(cat "$WORK/out")" "0 migrations applied" "second migrate"
ok "migrate is idempotent"
assert_eq "$(px db psql -At -c 'SELECT 6*7')" 42 "db psql passes arguments to psql"
assert_eq "$(sql "SELECT count(*) FROM information_schema.tables WHERE (table_schema, table_name) IN
    (('wh','dim_patient'), ('wh','patient_year'), ('wh','dim_provider'), ('wh','fact_encounter'),
     ('wh','fact_diagnosis'), ('wh','fact_procedure'), ('etl','batches'), ('etl','batch_files'),
     ('etl','rejects'), ('etl','warnings'), ('audit','events'))")" 11 "the warehouse's tables, by name"
# audit.events is append-only for the application
sql "INSERT INTO audit.events (action) VALUES ('test')"
if sql "DELETE FROM audit.events" 2>/dev/null; then fail "audit.events allowed a DELETE"; fi
if sql "UPDATE audit.events SET action = 'x'" 2>/dev/null; then fail "audit.events allowed an UPDATE"; fi
ok "audit.events refuses UPDATE and DELETE"

assert_exit 0 px db stop
assert_exit 1 px db status
grep -q stopped "$WORK/out" || fail "status after stop does not say stopped"
assert_exit 0 px etl status          # starts the server by itself
assert_exit 0 px db status
ok "commands that need the database start it"

# PROGNOS_DB: another home uses this server and never manages one
URL=$(px db url)
(
    export PROGNOS_HOME="$WORK/home-ext" PROGNOS_DB="$URL"
    assert_exit 0 px db init                      # key + migrations on the external server
    [ ! -d "$PROGNOS_HOME/pg" ] || fail "PROGNOS_DB: a cluster was created anyway"
    assert_exit 1 px db start
    grep -q "PROGNOS_DB is set" "$WORK/err" || fail "db start with PROGNOS_DB: no clear error"
    assert_exit 0 px etl status
)
ok "PROGNOS_DB uses an existing server"

for c in "" "db" "etl" "generate"; do
    assert_exit 0 px $c --help
    grep -qi usage "$WORK/out" || fail "'prognos $c --help' prints no usage"
done
assert_exit 2 px nosuchcommand
assert_exit 2 px db nosuch
assert_exit 2 px etl load --format excel --source x
grep -q "unknown format" "$WORK/err" || fail "bad --format: no clear error"
assert_exit 2 px etl load --format canonical
ok "--help everywhere, usage errors exit 2"

# as an ordinary user (when we are root and can become one): the same commands
# work without runuser, and that user cannot reach root's warehouse socket
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1 && runuser -u nobody -- test -x "$PROGNOS_BIN"; then
    NH="$WORK/home-nobody"
    mkdir -p "$NH" && chown nobody "$NH"
    asnobody() { runuser -u nobody -- env PROGNOS_HOME="$NH" "$@"; }
    asnobody "$PROGNOS_BIN" db init >/dev/null || fail "db init as an ordinary user"
    [ "$(stat -c %U "$NH/pg/data")" = nobody ] || fail "an ordinary user's cluster is not owned by that user"
    assert_eq "$(asnobody psql -X -At "$(asnobody "$PROGNOS_BIN" db url)" -c 'SELECT 6*7')" 42 "psql as an ordinary user"
    if asnobody psql -X -At "$(px db url)" -c 'SELECT 1' >/dev/null 2>&1; then
        fail "an ordinary user connected to root's warehouse"
    fi
    asnobody "$PROGNOS_BIN" db stop >/dev/null
    ok "an ordinary user runs its own warehouse and cannot reach another's"
else
    echo "skip - not root, or no 'nobody' user that can run $PROGNOS_BIN"
fi

# as root, with PROGNOS_HOME inside a directory the server user cannot enter
# (a checkout made with mktemp -d): the cluster is placed where it can, and
# $PROGNOS_HOME/pg links to it
if [ "$(id -u)" -eq 0 ]; then
    mkdir -m 700 "$WORK/private"
    PH="$WORK/private/home"
    PROGNOS_HOME="$PH" px db init >/dev/null || fail "db init in a 0700 directory"
    [ -L "$PH/pg" ] || fail "the cluster of an unreachable home is not linked from \$PROGNOS_HOME/pg"
    assert_eq "$(psql -X -At "$(PROGNOS_HOME="$PH" px db url)" -c 'SELECT 6*7')" 42 "psql on a relocated cluster"
    PROGNOS_HOME="$PH" px db stop >/dev/null
    PROGNOS_HOME="$PH" px db status >/dev/null 2>&1 && fail "status says running after stop"
    PROGNOS_HOME="$PH" px etl status >/dev/null || fail "etl status restarts a relocated cluster"
    ok "a home the server user cannot reach gets its cluster placed outside, linked"
fi

# --json is built with cJSON: a home whose path holds a quote, a backslash and a
# tab still gives one JSON document that names it exactly (a printf of "%s" did not)
QH="$WORK/odd \"quoted\" \\ home	tab"
mkdir -p "$QH"
assert_exit 1 env PROGNOS_HOME="$QH" "$PROGNOS_BIN" db status --json   # no warehouse there: not running
got=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["home"] == sys.argv[2], d["running"], d["schema_version"])' \
      "$WORK/out" "$QH")
assert_eq "$got" "True False None" "db status --json on a home with a quote, backslash and tab"
ok "db status --json escapes the home's path"

# a stopped home copied to another path (a backup restored elsewhere, a home moved)
# starts there at once: its cluster's socket directory follows the home (it named the
# old home's, and `db start` waited 120 s for a socket that never appeared)
px db status >/dev/null 2>&1 && px db stop >/dev/null
cp -a "$PROGNOS_HOME" "$WORK/moved"
conf="$WORK/moved/pg/data/postgresql.auto.conf"
owner=$(stat -c %U:%G:%a "$conf")
t0=$SECONDS
PROGNOS_HOME="$WORK/moved" px db start >/dev/null || fail "db start of a copied home"
[ $((SECONDS - t0)) -lt 60 ] || fail "db start of a copied home took $((SECONDS - t0)) s"
assert_eq "$(grep -c "^unix_socket_directories = '$(readlink -f "$WORK/moved/pg")/run'\$" "$conf")" 1 \
    "the copy's socket directory"
assert_eq "$(grep -c '^unix_socket_directories' "$PROGNOS_HOME/pg/data/postgresql.auto.conf")" 1 "the original's socket line"
assert_eq "$(grep -c "^unix_socket_directories = '$(readlink -f "$PROGNOS_HOME/pg")/run'\$" \
    "$PROGNOS_HOME/pg/data/postgresql.auto.conf")" 1 "the original's socket directory, unchanged"
assert_eq "$(stat -c %U:%G:%a "$conf")" "$owner" "the rewritten configuration's owner and mode"
assert_eq "$(psql -X -At "$(PROGNOS_HOME="$WORK/moved" px db url)" -c 'SELECT 6*7')" 42 "psql on the copied home"
px db start >/dev/null || fail "db start of the original beside its running copy"
sql "CREATE TABLE public.which_home AS SELECT 'original' AS h"
assert_exit 1 psql -X -At "$(PROGNOS_HOME="$WORK/moved" px db url)" -c 'SELECT h FROM public.which_home'
sql "DROP TABLE public.which_home"
PROGNOS_HOME="$WORK/moved" px db stop >/dev/null
ok "a copied home starts at its new path, beside the original"
