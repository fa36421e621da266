/* marts.c: px_feat_marts_build, the analysts' marts (cost of care, readmissions,
 * provider utilization) as tables in the mart schema. One repeatable-read
 * transaction runs features/sql/marts.sql, which drops and recreates every mart
 * table, so readers see either the old marts or the new ones, never a mix; the
 * build is recorded in audit.events. Serialised with the feature builds. */
#include "features/internal.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const px_feat_marts[] = {"mart.cost_patient_year", "mart.cost_facility", "mart.cost_drg",
                                     "mart.readmission", "mart.readmission_facility", "mart.provider_utilization"};
const int px_feat_marts_count = (int)(sizeof px_feat_marts / sizeof px_feat_marts[0]);

int px_feat_marts_build(PGconn *c, px_feat_marts_result *r, px_err *e)
{
    struct timespec t0, t1;
    int rc = 0, in_tx = 0, locked = 0;
    char *counts = NULL;
    memset(r, 0, sizeof *r);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        rc = px_err_set(e, PX_ESTATE, "cannot build the marts inside an open transaction");
        px_err_hint(e, "the build commits its own transaction; call it between transactions");
        return rc;
    }
    if ((rc = px_db_query(c, e, "cannot build the marts: locking failed", NULL, "SELECT pg_advisory_lock(7070010)" /* build.c's PX_FEAT_LOCK */, 0,
                          NULL)) != 0)
        goto out;
    locked = 1;
    {
        px_shards_recovery rec;   /* a killed load's prepared rows first (a sharded warehouse) */
        if ((rc = px_shards_recover(c, 0, &rec, e)) != 0) goto out;
    }
    if ((rc = px_db_query(c, e, "cannot build the marts: BEGIN failed", NULL,
                          "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL)) != 0)
        goto out;
    in_tx = 1;
    if ((rc = px_db_exec(c, e, "SET LOCAL work_mem = '256MB'; SET LOCAL jit = off")) != 0) goto out;
    if ((rc = px_shards_tune(c, e)) != 0) goto out; /* a sharded warehouse: per-shard aggregates */
    if ((rc = px_retention_check_partial(c, "features build --set marts", e)) != 0) goto out;
    {
        PGresult *res = PQexec(c, feat_sql_marts);
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            rc = px_db_fail(e, c, res, "cannot build the marts: features/sql/marts.sql failed");
        PQclear(res);
        if (rc != 0) goto out;
    }
    if ((rc = px_db_value(c, e, "cannot count the mart rows", &counts,
                          "SELECT format('%s %s %s %s %s %s', (SELECT count(*) FROM mart.cost_patient_year),"
                          " (SELECT count(*) FROM mart.cost_facility), (SELECT count(*) FROM mart.cost_drg),"
                          " (SELECT count(*) FROM mart.readmission), (SELECT count(*) FROM mart.readmission_facility),"
                          " (SELECT count(*) FROM mart.provider_utilization))",
                          0, NULL)) != 0)
        goto out;
    if (!counts || sscanf(counts, "%lld %lld %lld %lld %lld %lld", &r->rows[0], &r->rows[1], &r->rows[2], &r->rows[3],
                          &r->rows[4], &r->rows[5]) != PX_FEAT_MARTS) {
        rc = px_err_set(e, PX_EDB, "cannot count the mart rows");
        goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    {
        char secs[32];
        snprintf(secs, sizeof secs, "%.3f", r->seconds);
        const char *pv[] = {counts, secs};
        if ((rc = px_db_audit_commit(c, e, "cannot record the marts build in audit.events",
                                     "INSERT INTO audit.events (action, object, detail) SELECT 'marts.build', 'mart',"
                                     " jsonb_build_object('rows', jsonb_object_agg(t, n::bigint),"
                                     " 'seconds', $2::float8, 'source_batches',"
                                     " (SELECT coalesce(array_agg(batch_id ORDER BY batch_id), '{}') FROM etl.batches))"
                                     " FROM unnest(ARRAY['cost_patient_year','cost_facility','cost_drg','readmission',"
                                     "'readmission_facility','provider_utilization'],"
                                     " string_to_array($1, ' ')) AS u(t, n)",
                                     2, pv, "cannot build the marts: COMMIT failed", &in_tx)) != 0)
            goto out;
    }
    px_log(PX_LOG_INFO, "built the marts in %.1f s: %s rows", r->seconds, counts);
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    if (locked) px_db_exec(c, NULL, "SELECT pg_advisory_unlock(7070010)");
    if (rc != 0) memset(r, 0, sizeof *r);
    free(counts);
    return rc;
}
