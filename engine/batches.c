/* batches.c: the ETL's batch log (etl.batches) read for other folders (issue 13):
 * which loads a KPI run or a report draws on. The loader itself writes the log
 * (etl.c); nothing outside engine/ names the table. */
#include "engine/internal.h"
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

int px_etl_loaded_batches(PGconn *c, char **ids, px_err *e)
{
    int rc = px_db_value(c, e, "cannot read etl.batches", ids,
                         "SELECT coalesce(array_agg(batch_id ORDER BY batch_id)::text, '{}')"
                         " FROM etl.batches WHERE finished_at IS NOT NULL AND rows_loaded > 0",
                         0, NULL);
    if (rc == 0 && !*ids) rc = px_err_set(e, PX_EDB, "cannot read etl.batches");
    return rc;
}

int px_etl_batches_by_id(PGconn *c, const char *ids, px_etl_batch **out, size_t *n, px_err *e)
{
    *out = NULL;
    *n = 0;
    const char *params[1] = {ids};
    PGresult *r = NULL;
    int rc = px_db_query(c, e, "cannot read etl.batches", &r,
                         "SELECT batch_id, format, coalesce(to_char(finished_at, 'YYYY-MM-DD HH24:MI TZ'), ''),"
                         " rows_loaded FROM etl.batches WHERE batch_id = ANY($1::bigint[]) ORDER BY batch_id",
                         1, params);
    if (rc != 0) return rc;
    size_t k = (size_t)PQntuples(r);
    px_etl_batch *v = calloc(k ? k : 1, sizeof *v);
    if (!v) {
        PQclear(r);
        return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < k; i++) {
        int row = (int)i;
        v[i].batch_id = atoll(PQgetvalue(r, row, 0));
        snprintf(v[i].format, sizeof v[i].format, "%s", PQgetvalue(r, row, 1));
        snprintf(v[i].finished, sizeof v[i].finished, "%s", PQgetvalue(r, row, 2));
        v[i].rows_loaded = atoll(PQgetvalue(r, row, 3));
    }
    PQclear(r);
    *out = v;
    *n = k;
    return 0;
}
