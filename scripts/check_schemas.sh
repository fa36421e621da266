#!/usr/bin/env bash
# check_schemas.sh: SQL tables are not an API between folders (issue 13). Greps the
# SQL in each folder's C sources and .sql files and fails when a folder names a
# schema another folder owns. engine's schemas (wh, etl, audit, run, and public)
# may be named everywhere; every other schema only by its owner:
#   features -> features/   registry -> registry/   kpi -> kpi/   serve -> serve/
# Another folder's data comes through the owner's exported reads (px_reg_champions,
# px_feat_latest_builds, px_kpi_latest, ...; see ARCHITECTURE.md).
#
# What counts as SQL naming a schema: a keyword that takes a relation (FROM, JOIN,
# INTO, UPDATE, TABLE, ON, REFERENCES, TRUNCATE) or to_regclass(' followed by
# schema.name, or a call schema.name( -- so prose such as "recorded in
# registry.decisions" in a usage text is not a hit.
#
# Usage: scripts/check_schemas.sh [ROOT]   (default: the repository)
#        scripts/check_schemas.sh --self-test   (plants a violation in a scratch tree
#        and checks it is found, then checks a clean scratch tree passes)
# Exit 0: clean; 1: a folder names another's schema (each hit listed); 2: usage.
set -euo pipefail

# Migrations applied before the schemas moved into their folders that change two
# owners' tables in one transaction: splitting one would re-run half of it on
# existing databases, so they stay whole, listed here with the schemas they may name.
allowed_extra() {
    case "$1" in
        registry/sql/008_gates.sql) echo "kpi" ;;
        *) echo "" ;;
    esac
}

owned=(features registry kpi serve)

check_tree() {
    local root=$1 bad=0 folder schema f hits extra
    for folder in engine features models registry kpi serve; do
        [ -d "$root/$folder" ] || continue
        for schema in "${owned[@]}"; do
            [ "$schema" = "$folder" ] && continue
            local kw="(\\b(FROM|JOIN|INTO|UPDATE|TABLE|ON|REFERENCES|TRUNCATE)[[:space:]]+|regclass\\(')\"?$schema\"?\\.[a-z_]+|\\b$schema\\.[a-z_]+\\("
            # C: SQL keywords are upper case in this code base; .sql: any case
            hits=$( { grep -rnE --include='*.c' --include='*.h' "$kw" "$root/$folder" 2>/dev/null || true
                      grep -rniE --include='*.sql' "$kw" "$root/$folder" 2>/dev/null || true; } )
            [ -n "$hits" ] || continue
            while IFS= read -r line; do
                f=${line%%:*}
                f=${f#"$root/"}
                extra=$(allowed_extra "$f")
                case " $extra " in *" $schema "*) continue ;; esac
                echo "check_schemas: $folder/ names $schema's schema (owned by $schema/): ${line#"$root/"}" >&2
                bad=1
            done <<<"$hits"
        done
    done
    return $bad
}

self_test() {
    local t
    t=$(mktemp -d)
    trap 'rm -rf "$t"' RETURN
    mkdir -p "$t/serve" "$t/kpi/sql" "$t/engine/cli"
    # clean: own schema, engine's schemas, prose naming another schema
    printf '%s\n' 'static const char q[] = "SELECT 1 FROM serve.api_keys JOIN wh.fact_encounter USING (x)";' \
        '/* the champion, recorded in registry.versions */' >"$t/serve/a.c"
    printf '%s\n' 'CREATE TABLE kpi.runs (run_id bigint);' 'SELECT * FROM etl.batches;' >"$t/kpi/sql/005_kpi.sql"
    printf '%s\n' '"Alerts are stored in serve.drift_alerts and shown by the server.\n"' >"$t/engine/cli/u.c"
    if ! check_tree "$t" 2>/dev/null; then
        echo "check_schemas: self-test: a clean tree was reported" >&2
        return 1
    fi
    # each of these must be found
    local cases=('r = PQexec(c, "SELECT name FROM registry.versions");'
                 '" FROM x JOIN registry.aliases a USING (name)"'
                 '"SELECT to_regclass('"'"'kpi.latest_results'"'"')"'
                 '"SELECT features.map_digest()"')
    for c in "${cases[@]}"; do
        printf '%s\n' "$c" >"$t/serve/b.c"
        if check_tree "$t" 2>/dev/null; then
            echo "check_schemas: self-test: missed: $c" >&2
            return 1
        fi
    done
    rm -f "$t/serve/b.c"
    printf '%s\n' 'alter table registry.versions add column x int;' >"$t/kpi/sql/099_x.sql"
    if check_tree "$t" 2>/dev/null; then
        echo "check_schemas: self-test: missed a lower-case migration naming another schema" >&2
        return 1
    fi
    echo "check_schemas: self-test passed"
}

case "${1:-}" in
    --self-test) self_test ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "usage: $0 [ROOT] | --self-test" >&2; exit 2 ;;
    *)
        root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
        if check_tree "$root"; then
            echo "check_schemas: every folder names only its own schemas and engine's"
        else
            exit 1
        fi
        ;;
esac
