/* etl_fhir.c: loads FHIR R4 Bulk Data NDJSON (one resource per line, files in
 * any order) through the canonical loader, so that validation,
 * pseudonymization, merges and reject reasons are the canonical format's.
 * etl_fhir_read.c turns the NDJSON into the six canonical tables (no database);
 * each is then loaded by etl_canonical_file(), and the rejects and warnings of
 * its rows are moved to the NDJSON file and line of their resource. So each
 * resource is loaded, rejected with a reason (and its pseudonymized row), or
 * counted skipped with a reason, per file in etl.batch_files. */
#include "engine/etl_int.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the batch ------------------------------------------------------------------- */

/* Moves the rejects and warnings of the canonical tables to the NDJSON file and
 * line of the resource each row came from. */
static int remap_origins(etl_ctx *x, const etl_fhir *F, etl_input *derived)
{
    int rc = px_db_exec(x->c, x->e, "CREATE TEMP TABLE IF NOT EXISTS fhir_origin (file_name text, line bigint,"
                                    " src_file text, src_line bigint) ON COMMIT DROP; TRUNCATE fhir_origin");
    if (rc) return rc;
    x->in = &derived[0];
    if ((rc = etl_copy_begin(x, "COPY fhir_origin FROM STDIN")) != 0) return rc;
    for (int t = 0; t < PX_TAB__COUNT && rc == 0; t++)
        for (long long k = 0, rows = 0; etl_fhir_table(F, t, &rows) && k < rows && rc == 0; k++) {
            px_buf *b = &x->copy.buf;
            px_buf_copy_field(b, derived[t].name, strlen(derived[t].name));
            px_buf_printf(b, "\t%lld\t", k + 2);
            const char *fn;
            long long line;
            etl_fhir_origin(F, t, k, &fn, &line);
            px_buf_copy_field(b, fn, strlen(fn));
            px_buf_printf(b, "\t%lld\n", line);
            rc = etl_copy_flush(x, 0);
        }
    int rc2 = etl_copy_end(x, NULL);
    if (rc || rc2) return rc ? rc : rc2;
    long long moved = 0, left = 0;
    static const char *const upd[2] = {
        "UPDATE etl.rejects r SET file_name = o.src_file, line = o.src_line FROM fhir_origin o"
        " WHERE r.batch_id = $1 AND r.file_name = o.file_name AND r.line = o.line",
        "UPDATE etl.warnings r SET file_name = o.src_file, line = o.src_line FROM fhir_origin o"
        " WHERE r.batch_id = $1 AND r.file_name = o.file_name AND r.line = o.line"};
    for (int i = 0; i < 2 && rc == 0; i++) rc = etl_sql(x, upd[i], &moved, NULL);
    if (rc == 0)
        rc = etl_sql(x, "SELECT (SELECT count(*) FROM etl.rejects WHERE batch_id = $1 AND file_name LIKE 'fhir:%')"
                        " + (SELECT count(*) FROM etl.warnings WHERE batch_id = $1 AND file_name LIKE 'fhir:%')",
                     &left, NULL);
    if (rc == 0 && left > 0) {
        rc = px_err_set(x->e, PX_ESTATE, "%lld rejects or warnings of the FHIR load lost their NDJSON line", left);
        px_err_hint(x->e, "this is a bug in prognos; nothing was stored");
    }
    return rc;
}

int etl_fhir_load(etl_ctx *x, etl_input *inputs, int n, px_etl_result *res)
{
    etl_input derived[PX_TAB__COUNT];
    int rc = 0;
    memset(derived, 0, sizeof derived);
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        derived[t].table = t;
        snprintf(derived[t].name, sizeof derived[t].name, "fhir:%s", px_canonical[t].name);
        snprintf(derived[t].path, sizeof derived[t].path, "(%s from FHIR)", px_canonical[t].file);
    }
    etl_fhir *F = etl_fhir_new(x, inputs, n);
    if (!F) return x->e->code;
    /* pass 1, then 2; the FHIR-level rejects go to etl.rejects now */
    if ((rc = etl_fhir_read(F)) != 0) goto out;
    if ((rc = etl_rejects_flush(x)) != 0) goto out;

    /* the canonical tables, in load order */
    if ((rc = etl_canonical_begin(x)) != 0) goto out;
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        long long rows = 0;
        FILE *f = etl_fhir_table(F, t, &rows);
        if (rows == 0) continue;
        x->in = &derived[t];
        x->read = x->rejected = x->loaded = 0;
        int fd = dup(fileno(f));
        if (fd < 0) {
            rc = px_err_set(x->e, PX_EIO, "cannot read back a temporary file: %s", strerror(errno));
            goto out;
        }
        rc = etl_canonical_file(x, fd);
        close(fd);
        if (rc == 0 && x->read != x->loaded + x->rejected) {
            rc = px_err_set(x->e, PX_ESTATE, "row accounting failed for '%s': read %lld, loaded %lld, rejected %lld",
                            x->in->name, x->read, x->loaded, x->rejected);
            px_err_hint(x->e, "this is a bug in prognos; nothing was stored");
        }
        if (rc != 0) goto out;
    }
    if ((rc = remap_origins(x, F, derived)) != 0) goto out;

    /* per NDJSON file: read = loaded + rejected + skipped */
    PGresult *r = etl_exec(x, "SELECT file_name, count(*) FROM etl.rejects WHERE batch_id = $1 GROUP BY file_name");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_db_fail(x->e, x->c, r, "cannot count the rejects of the FHIR load");
        PQclear(r);
        goto out;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (inputs[i].prior_batch) continue;
        long long rej = 0;
        for (int k = 0; k < PQntuples(r); k++)
            if (strcmp(PQgetvalue(r, k, 0), inputs[i].name) == 0) rej = atoll(PQgetvalue(r, k, 1));
        long long nread, nskip;
        etl_fhir_counts(F, i, &nread, &nskip);
        long long loaded = nread - rej - nskip;
        if (loaded < 0) {
            rc = px_err_set(x->e, PX_ESTATE, "row accounting failed for '%s': read %lld, rejected %lld, skipped %lld",
                            inputs[i].name, nread, rej, nskip);
            px_err_hint(x->e, "this is a bug in prognos; nothing was stored");
            break;
        }
        px_buf sk = {0};
        etl_fhir_skipped_json(F, i, &sk);
        if (!sk.data) {
            rc = px_err_set(x->e, PX_ENOMEM, "out of memory");
            break;
        }
        char bid[32], bytes[32], nr[32], nl[32], nj[32], ns[32];
        snprintf(bid, sizeof bid, "%lld", x->batch);
        snprintf(bytes, sizeof bytes, "%lld", inputs[i].bytes);
        snprintf(nr, sizeof nr, "%lld", nread);
        snprintf(nl, sizeof nl, "%lld", loaded);
        snprintf(nj, sizeof nj, "%lld", rej);
        snprintf(ns, sizeof ns, "%lld", nskip);
        const char *params[9] = {bid, inputs[i].name, inputs[i].sha, bytes, nr, nl, nj, ns, sk.data};
        rc = px_db_query(x->c, x->e, "cannot record a FHIR input", NULL,
                         "INSERT INTO etl.batch_files (batch_id, file_name, table_name, sha256, bytes, rows_read,"
                         " rows_loaded, rows_rejected, rows_skipped, skipped) VALUES ($1, $2, 'fhir', $3, $4, $5, $6, $7,"
                         " $8, $9::jsonb)",
                         9, params);
        px_buf_release(&sk);
        res->files_loaded++;
        res->rows_read += nread;
        res->rows_loaded += loaded;
        res->rows_rejected += rej;
        res->rows_skipped += nskip;
        if (etl_fhir_unmapped(F, i))
            px_buf_printf(&x->notes, "%s: %lld resources coded only in other systems than ICD-10-CM/ICD-9-CM were "
                          "skipped (etl.warnings, unmapped_code_system); --code-map FILE maps them\n",
                          inputs[i].name, etl_fhir_unmapped(F, i));
        px_log(PX_LOG_INFO, "batch %lld: %s: %lld read, %lld loaded, %lld rejected, %lld skipped", x->batch,
               inputs[i].name, nread, loaded, rej, nskip);
    }
    PQclear(r);
out:
    x->in = NULL;
    etl_fhir_free(F);
    return rc;
}
