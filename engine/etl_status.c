/* etl_status.c: the load report: per batch its files, row counts, rejects by
 * reason and a data-quality score. The score is the share of rows read that
 * were loaded, in percent: simple, and an operator can check it by hand (rows
 * skipped because the warehouse does not hold them, as FHIR resources of other
 * types, are not counted against it).
 * Loads that failed or were rolled back are listed with their reason. */
#include "engine/etl_int.h"
#include <string.h>

static const char status_json[] =
    "SELECT jsonb_pretty(jsonb_build_object("
    " 'batches', coalesce((SELECT jsonb_agg(jsonb_build_object("
    "   'batch_id', b.batch_id, 'status', 'committed', 'format', b.format, 'source', b.source, 'started_at', b.started_at,"
    "   'finished_at', b.finished_at, 'loaded_by', b.loaded_by, 'rows_read', b.rows_read,"
    "   'rows_loaded', b.rows_loaded, 'rows_rejected', b.rows_rejected, 'rows_skipped', b.rows_skipped,"
    "   'quality_score', CASE WHEN b.rows_read > b.rows_skipped"
    "     THEN round(100.0 * b.rows_loaded / (b.rows_read - b.rows_skipped), 2) END,"
    "   'files', (SELECT jsonb_agg(jsonb_build_object('file', f.file_name, 'table', f.table_name,"
    "       'sha256', f.sha256, 'bytes', f.bytes, 'rows_read', f.rows_read, 'rows_loaded', f.rows_loaded,"
    "       'rows_rejected', f.rows_rejected, 'rows_skipped', f.rows_skipped, 'skipped', f.skipped)"
    "       ORDER BY f.file_name) FROM etl.batch_files f"
    "       WHERE f.batch_id = b.batch_id),"
    "   'rejects_by_reason', coalesce((SELECT jsonb_object_agg(reason, n) FROM (SELECT reason, count(*) AS n"
    "       FROM etl.rejects r WHERE r.batch_id = b.batch_id GROUP BY reason) t), '{}'::jsonb),"
    "   'warnings_by_reason', coalesce((SELECT jsonb_object_agg(reason, n) FROM (SELECT reason, count(*) AS n"
    "       FROM etl.warnings w WHERE w.batch_id = b.batch_id GROUP BY reason) t), '{}'::jsonb))"
    "   ORDER BY b.batch_id) FROM etl.batches b), '[]'::jsonb),"
    " 'failed_batches', coalesce((SELECT jsonb_agg(jsonb_build_object('batch_id', f.batch_id, 'status', 'failed',"
    "   'format', f.format, 'source', f.source, 'started_at', f.started_at, 'failed_at', f.failed_at,"
    "   'loaded_by', f.loaded_by, 'rows_read', f.rows_read, 'rows_rejected', f.rows_rejected, 'reason', f.reason)"
    "   ORDER BY f.batch_id) FROM etl.failed_batches f), '[]'::jsonb),"
    " 'warehouse', jsonb_build_object("
    "   'patients', (SELECT count(*) FROM wh.dim_patient),"
    "   'providers', (SELECT count(*) FROM wh.dim_provider),"
    "   'encounters', (SELECT count(*) FROM wh.fact_encounter),"
    "   'diagnoses', (SELECT count(*) FROM wh.fact_diagnosis),"
    "   'procedures', (SELECT count(*) FROM wh.fact_procedure))))";

static const char status_batches[] =
    "SELECT b.batch_id, b.format, to_char(b.finished_at, 'YYYY-MM-DD HH24:MI:SS'),"
    " (SELECT count(*) FROM etl.batch_files f WHERE f.batch_id = b.batch_id), b.rows_read, b.rows_loaded,"
    " b.rows_rejected, CASE WHEN b.rows_read > b.rows_skipped"
    "   THEN to_char(100.0 * b.rows_loaded / (b.rows_read - b.rows_skipped), 'FM990.00')"
    " ELSE '-' END, coalesce((SELECT string_agg(reason || ' ' || n, ', ' ORDER BY n DESC, reason)"
    "   FROM (SELECT reason, count(*) AS n FROM etl.rejects r WHERE r.batch_id = b.batch_id GROUP BY reason) t), ''),"
    " b.source, coalesce((SELECT string_agg(reason || ' ' || n, ', ' ORDER BY n DESC, reason)"
    "   FROM (SELECT reason, count(*) AS n FROM etl.warnings w WHERE w.batch_id = b.batch_id GROUP BY reason) t), ''),"
    " 'committed', '', coalesce((SELECT string_agg(k || ' ' || n, ', ' ORDER BY n DESC, k) FROM (SELECT k, sum(v::bigint) AS n"
    "   FROM etl.batch_files f, jsonb_each_text(f.skipped) AS j(k, v) WHERE f.batch_id = b.batch_id GROUP BY k) t), '')"
    " FROM etl.batches b"
    /* loads that drew a batch id and did not commit (etl.failed_batches): nothing stored */
    " UNION ALL SELECT f.batch_id, f.format, to_char(f.failed_at, 'YYYY-MM-DD HH24:MI:SS'), 0, f.rows_read, 0,"
    " f.rows_rejected, '-', '', f.source, '', 'failed', f.reason, '' FROM etl.failed_batches f ORDER BY 1";

static const char status_totals[] =
    "SELECT (SELECT count(*) FROM wh.dim_patient), (SELECT count(*) FROM wh.dim_provider),"
    " (SELECT count(*) FROM wh.fact_encounter), (SELECT count(*) FROM wh.fact_diagnosis),"
    " (SELECT count(*) FROM wh.fact_procedure)";

int px_etl_status(const px_config *cfg, int json, FILE *out, px_err *e)
{
    PGconn *c = px_db_open(cfg, e); /* reads only: never creates a warehouse */
    if (!c) return e->code;
    int rc = 0;
    PGresult *r = PQexec(c, json ? status_json : status_batches);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_err_set(e, PX_EDB, "cannot read the load history");
        px_err_detail(e, "%s", PQresultErrorMessage(r));
        goto out;
    }
    if (json) {
        fprintf(out, "%s\n", PQgetvalue(r, 0, 0));
        goto out;
    }
    if (PQntuples(r) == 0) fprintf(out, "no batches loaded yet\n");
    else
        fprintf(out, "%-6s %-9s %-19s %5s %10s %10s %9s %8s\n", "batch", "format", "finished (UTC)", "files",
                "read", "loaded", "rejected", "quality");
    for (int i = 0; i < PQntuples(r); i++) {
        int failed = strcmp(PQgetvalue(r, i, 11), "failed") == 0;
        fprintf(out, "%-6s %-9s %-19s %5s %10s %10s %9s %7s%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
                PQgetvalue(r, i, 6), failed ? "failed" : PQgetvalue(r, i, 7), failed ? "" : "%");
        fprintf(out, "       source: %s\n", PQgetvalue(r, i, 9));
        if (PQgetvalue(r, i, 8)[0]) fprintf(out, "       rejects: %s\n", PQgetvalue(r, i, 8));
        if (PQgetvalue(r, i, 10)[0])
            fprintf(out, "       warnings (a value, column or resource dropped): %s\n", PQgetvalue(r, i, 10));
        if (PQgetvalue(r, i, 13)[0]) fprintf(out, "       skipped (not held by the warehouse): %s\n", PQgetvalue(r, i, 13));
        if (failed)
            fprintf(out, "       FAILED, nothing stored: %s\n", PQgetvalue(r, i, 12));
    }
    PQclear(r);
    r = PQexec(c, status_totals);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        fprintf(out, "warehouse: %s patients, %s providers, %s encounters, %s diagnoses, %s procedures\n",
                PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3),
                PQgetvalue(r, 0, 4));
out:
    PQclear(r);
    PQfinish(c);
    return rc;
}
