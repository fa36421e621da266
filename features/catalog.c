/* catalog.c: features.catalog read for other folders (issue 13): the latest
 * build of a feature table (what a KPI run records as its input) and the
 * listing behind `prognos features list`. No other folder queries the catalog. */
#include "features/internal.h"
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

int px_feat_latest_builds(PGconn *c, const char *table, px_feat_build_row **out, size_t *n, px_err *e)
{
    *out = NULL;
    *n = 0;
    const char *params[1] = {table ? table : ""};
    PGresult *r = NULL;
    /* a warehouse without the catalog (dropped, or a partial restore) has no builds */
    char *have = NULL;
    int rc = px_db_value(c, e, "cannot read features.catalog", &have,
                         "SELECT (to_regclass('features.catalog') IS NOT NULL)::int::text", 0, NULL);
    if (rc != 0) return rc;
    int exists = have && strcmp(have, "1") == 0;
    free(have);
    if (!exists) return 0;
    rc = px_db_query(c, e, "cannot read features.catalog", &r,
                     "SELECT set_name, table_name, build_id, definition_hash, built_at::text"
                     " FROM (SELECT DISTINCT ON (CASE WHEN $1 = '' THEN set_name ELSE table_name END) *"
                     "       FROM features.catalog WHERE $1 = '' OR table_name = $1"
                     "       ORDER BY CASE WHEN $1 = '' THEN set_name ELSE table_name END, build_id DESC) l"
                     " ORDER BY set_name",
                     1, params);
    if (rc != 0) return rc;
    size_t k = (size_t)PQntuples(r);
    px_feat_build_row *v = calloc(k ? k : 1, sizeof *v);
    if (!v) {
        PQclear(r);
        return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < k; i++) {
        int row = (int)i;
        snprintf(v[i].set, sizeof v[i].set, "%s", PQgetvalue(r, row, 0));
        snprintf(v[i].table, sizeof v[i].table, "%s", PQgetvalue(r, row, 1));
        v[i].build_id = atoll(PQgetvalue(r, row, 2));
        snprintf(v[i].definition_hash, sizeof v[i].definition_hash, "%s", PQgetvalue(r, row, 3));
        snprintf(v[i].built_at, sizeof v[i].built_at, "%s", PQgetvalue(r, row, 4));
    }
    PQclear(r);
    *out = v;
    *n = k;
    return 0;
}

static const char list_sql[] =
    "SELECT coalesce(json_agg(json_build_object('set', set_name, 'table', table_name, 'build_id', build_id,"
    " 'rows', row_count, 'positives', positives, 'definition_hash', definition_hash,"
    " 'source_batches', source_batches, 'built_at', to_char(built_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " 'seconds', seconds, 'table_exists', to_regclass(table_name) IS NOT NULL) ORDER BY set_name), '[]')"
    " FROM (SELECT DISTINCT ON (set_name) * FROM features.catalog ORDER BY set_name, build_id DESC) l";

static const char list_text_sql[] =
    "SELECT set_name, table_name, build_id, row_count, positives, left(definition_hash, 12),"
    " array_to_string(source_batches, ','), to_char(built_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), seconds,"
    " to_regclass(table_name) IS NOT NULL"
    " FROM (SELECT DISTINCT ON (set_name) * FROM features.catalog ORDER BY set_name, build_id DESC) l"
    " ORDER BY set_name";

int px_feat_list(PGconn *c, int json, FILE *out, px_err *e)
{
    PGresult *r = NULL;
    int rc = px_db_query(c, e, "cannot read features.catalog", &r, json ? list_sql : list_text_sql, 0, NULL);
    if (rc != 0) return rc;
    if (json) {
        fprintf(out, "%s\n", PQgetvalue(r, 0, 0));
    } else if (PQntuples(r) == 0) {
        fprintf(out, "no feature tables built yet; run 'prognos features build'\n");
    } else {
        fprintf(out, "%-12s %-22s %6s %9s %9s %-12s %-10s %-16s %8s\n", "set", "table", "build", "rows", "positives",
                "hash", "batches", "built (UTC)", "seconds");
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(out, "%-12s %-22s %6s %9s %9s %-12s %-10s %-16s %8.1f%s\n", PQgetvalue(r, i, 0),
                    PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
                    PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7), atof(PQgetvalue(r, i, 8)),
                    strcmp(PQgetvalue(r, i, 9), "t") == 0 ? "" : "  (table dropped)");
    }
    PQclear(r);
    return 0;
}
