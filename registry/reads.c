/* reads.c: the registry's reads for other folders (issue 13). kpi, serve and the
 * CLI learn about champions and versions here instead of querying
 * registry.versions and registry.aliases themselves, so the tables can change
 * without touching them. */
#include "registry/internal.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void px_reg_briefs_free(px_reg_version_brief *v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i].source_batches);
    free(v);
}

/* Rows of (name, version, algo, task, feature_table, source_batches::text) into briefs. */
static int briefs_from(PGresult *r, px_reg_version_brief **out, size_t *n, px_err *e)
{
    size_t k = (size_t)PQntuples(r);
    px_reg_version_brief *v = calloc(k ? k : 1, sizeof *v);
    if (!v) return px_err_set(e, PX_ENOMEM, "out of memory");
    for (size_t i = 0; i < k; i++) {
        int row = (int)i;
        snprintf(v[i].name, sizeof v[i].name, "%s", PQgetvalue(r, row, 0));
        v[i].version = atoi(PQgetvalue(r, row, 1));
        snprintf(v[i].algo, sizeof v[i].algo, "%s", PQgetvalue(r, row, 2));
        snprintf(v[i].task, sizeof v[i].task, "%s", PQgetvalue(r, row, 3));
        snprintf(v[i].feature_table, sizeof v[i].feature_table, "%s", PQgetvalue(r, row, 4));
        if (!(v[i].source_batches = strdup(PQgetisnull(r, row, 5) ? "[]" : PQgetvalue(r, row, 5)))) {
            px_reg_briefs_free(v, i);
            return px_err_set(e, PX_ENOMEM, "out of memory");
        }
    }
    *out = v;
    *n = k;
    return 0;
}

/* Runs a query of those columns and returns its rows as briefs. */
static int briefs_query(PGconn *c, px_err *e, const char *what, const char *sql, int np, const char *const *params,
                        px_reg_version_brief **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    PGresult *r = NULL;
    int rc = px_db_query(c, e, what, &r, sql, np, params);
    if (rc != 0) return rc;
    rc = briefs_from(r, out, n, e);
    PQclear(r);
    return rc;
}

int px_reg_champions(PGconn *c, const char *name, int servable_only, const char *what, px_reg_version_brief **out,
                     size_t *n, px_err *e)
{
    /* a champion that failed its quality gates (gates.c) is not served unless it
     * was accepted at training; '{}' is a version from before the gates */
    const char *params[2] = {name ? name : "", servable_only ? "1" : "0"};
    return briefs_query(c, e, what ? what : "cannot read the champions",
                        "SELECT a.name, a.version, v.algo, v.task, v.feature_table, v.source_batches::text"
                        " FROM registry.aliases a JOIN registry.versions v USING (name, version)"
                        " WHERE a.alias = 'champion' AND ($1 = '' OR a.name = $1)"
                        " AND ($2 = '0' OR coalesce(v.gates->>'passed', 'true') <> 'false'"
                        "      OR coalesce(v.gates->>'accepted', 'false') = 'true')"
                        " ORDER BY a.name",
                        2, params, out, n);
}

int px_reg_versions(PGconn *c, const char *name, px_reg_version_brief **out, size_t *n, px_err *e)
{
    const char *params[1] = {name ? name : ""};
    return briefs_query(c, e, "cannot read the registry",
                        "SELECT name, version, algo, task, feature_table, source_batches::text FROM registry.versions"
                        " WHERE $1 = '' OR name = $1 ORDER BY name, version",
                        1, params, out, n);
}

void px_reg_version_row_free(px_reg_version_row *v)
{
    if (!v) return;
    free(v->summary_json);
    memset(v, 0, sizeof *v);
}

static double num_or_nan(PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? NAN : strtod(PQgetvalue(r, 0, col), NULL);
}

int px_reg_version_info(PGconn *c, const char *name, int version, px_reg_version_row *out, px_err *e)
{
    memset(out, 0, sizeof *out);
    char vref[16];
    snprintf(vref, sizeof vref, "%d", version);
    const char *params[2] = {name, vref};
    PGresult *r = NULL;
    int rc = px_db_query(
        c, e, "cannot read the registry row of a version", &r,
        "SELECT version, algo, feature_table, label, jsonb_build_object('version', version, 'algo', algo,"
        " 'feature_table', feature_table, 'label', label, 'fingerprint', to_jsonb(v)->'fingerprint',"
        " 'created_at', to_jsonb(v)->'created_at', 'auc', to_jsonb(v)#>'{metrics,overall,auc}',"
        " 'source_batches', to_jsonb(v)->'source_batches')::text,"
        " metrics#>>'{overall,auc}', metrics#>>'{overall,auc_lo}', metrics#>>'{overall,auc_hi}',"
        " metrics#>>'{overall,events}'"
        " FROM registry.versions v WHERE name = $1 AND version = $2::int",
        2, params);
    if (rc != 0) return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return PX_ENOTFOUND;
    }
    out->version = atoi(PQgetvalue(r, 0, 0));
    snprintf(out->algo, sizeof out->algo, "%s", PQgetvalue(r, 0, 1));
    snprintf(out->feature_table, sizeof out->feature_table, "%s", PQgetvalue(r, 0, 2));
    snprintf(out->label, sizeof out->label, "%s", PQgetvalue(r, 0, 3));
    out->auc = num_or_nan(r, 5);
    out->auc_lo = num_or_nan(r, 6);
    out->auc_hi = num_or_nan(r, 7);
    out->events = num_or_nan(r, 8);
    if (!(out->summary_json = strdup(PQgetvalue(r, 0, 4)))) rc = px_err_set(e, PX_ENOMEM, "out of memory");
    PQclear(r);
    return rc;
}

int px_reg_models_json(PGconn *c, char **json, px_err *e)
{
    return px_db_value(
        c, e, "cannot refresh the server's cached lists", json,
        "SELECT json_build_object('models', coalesce(json_agg(m ORDER BY m.name), '[]'))::text FROM ("
        " SELECT v.name,"
        "  (SELECT coalesce(json_object_agg(a.alias, a.version), '{}') FROM registry.aliases a WHERE a.name = v.name)"
        " AS aliases,"
        "  json_agg(json_build_object('version', v.version, 'algo', v.algo, 'task', v.task, 'feature_set', v.feature_set,"
        "   'feature_table', v.feature_table, 'label', v.label, 'created_at', v.created_at, 'fingerprint', v.fingerprint,"
        "   'metrics', v.metrics -> 'overall',"
        "   'aliases', (SELECT coalesce(json_agg(a.alias ORDER BY a.alias), '[]') FROM registry.aliases a"
        "               WHERE a.name = v.name AND a.version = v.version)) ORDER BY v.version) AS versions"
        " FROM registry.versions v GROUP BY v.name) m",
        0, NULL);
}
