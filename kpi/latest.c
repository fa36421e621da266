/* latest.c: the newest KPI run for other folders (issue 13): the server's /v1/kpi
 * reads it through px_kpi_latest, not from kpi.latest_results itself. */
#include "kpi/internal.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

int px_kpi_latest(PGconn *c, const char *measure, const char *period, const char *unit, int limit, char **json,
                  px_err *e)
{
    *json = NULL;
    PGresult *r = PQexec(c, "SELECT to_regclass('kpi.latest_results') IS NOT NULL AND EXISTS (SELECT 1 FROM kpi.runs)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* kpi.runs missing makes the EXISTS fail: no KPI schema at all */
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int missing = state && strcmp(state, "42P01") == 0;
        px_db_fail(e, c, r, "cannot read KPIs");
        PQclear(r);
        if (!missing) return PX_EDB;
        px_err_set(e, PX_ENOTFOUND, "no KPIs have been computed (prognos kpi compute)");
        return PX_ENOTFOUND;
    }
    int have = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!have) return px_err_set(e, PX_ENOTFOUND, "no KPIs have been computed (prognos kpi compute)");
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *q[4] = {measure ? measure : "", period ? period : "", unit ? unit : "", lim};
    return px_db_value(c, e, "cannot read KPIs", json,
                       "SELECT json_build_object('run_id', (SELECT max(run_id) FROM kpi.runs),"
                       " 'computed_at', (SELECT computed_at FROM kpi.runs ORDER BY run_id DESC LIMIT 1),"
                       " 'kpis', coalesce(json_agg(to_jsonb(k) ORDER BY k.measure, k.period_start, k.period_kind,"
                       " k.unit_type, k.unit), '[]'))::text FROM (SELECT * FROM kpi.latest_results"
                       " WHERE ($1 = '' OR measure = $1) AND ($2 = '' OR period = $2 OR period_kind = $2)"
                       " AND ($3 = '' OR unit = $3 OR unit_type = $3)"
                       " ORDER BY measure, period_start, period_kind, unit_type, unit LIMIT $4::int) k",
                       4, q);
}
