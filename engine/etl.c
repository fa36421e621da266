/* etl.c: the batch runner. One ETL batch, whatever the format: find the inputs
 * (etl_inputs.c), fingerprint them (etl_hash.c), skip those already loaded, then
 * load the rest inside ONE transaction, so that a killed load leaves nothing
 * behind and a rerun loads everything; the reject-rate rule, the batch's
 * records and its failure record. The format loaders (etl_canonical.c,
 * etl_synpuf.c, etl_fhir.c) parse, validate and pseudonymize, calling back into
 * the COPY writer (etl_copy.c), the reject spool (etl_reject.c), the key and
 * input hashing (etl_hash.c) and the progress reports (etl_progress.c); none of
 * those calls the runner. */
#include "engine/etl_int.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The latest batch that loaded a file with this SHA-256. Loads forced with
 * --force record the same digest again: max(), never a bare scalar subquery. */
#define PRIOR_BATCH_SQL "SELECT coalesce(max(batch_id)::text, '') FROM etl.batch_files WHERE sha256 = '%s'"

/* Held for the whole batch transaction: loads run one at a time. */
#define PX_ETL_LOCK PX_LOCK_ETL

px_etl_params px_etl_default_params(void)
{
    px_etl_params p = {.format = PX_FMT_CANONICAL, .max_reject_rate = 5.0};
    return p;
}

/* ---- per-file bookkeeping ------------------------------------------------------- */

int etl_file_done(etl_ctx *x)
{
    if (x->read != x->loaded + x->rejected) {
        px_err_set(x->e, PX_ESTATE, "row accounting failed for '%s': read %lld, loaded %lld, rejected %lld",
                   x->in->name, x->read, x->loaded, x->rejected);
        px_err_hint(x->e, "this is a bug in prognos; nothing was stored");
        return PX_ESTATE;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO etl.batch_files (batch_id, file_name, table_name, sha256, bytes, rows_read,"
             " rows_loaded, rows_rejected) VALUES ($1, $2, '%s', '%s', %lld, %lld, %lld, %lld)",
             x->in->table == ETL_SYN_BENE ? "beneficiary" : x->in->table == ETL_SYN_CLAIMS ? "inpatient_claims"
                                                                                         : px_canonical[x->in->table].name,
             x->in->sha, x->in->bytes, x->read, x->loaded, x->rejected);
    int rc = etl_sql(x, sql, NULL, NULL);
    if (rc == 0)
        px_log(PX_LOG_INFO, "batch %lld: %s: %lld read, %lld loaded, %lld rejected", x->batch, x->in->name,
               x->read, x->loaded, x->rejected);
    return rc;
}

/* ---- the batch ------------------------------------------------------------------ */

static int load_input(etl_ctx *x, etl_input *in, PGconn *src, int *skipped)
{
    int rc = 0, fd = -1;
    etl_pg_feed *feed = NULL;
    x->in = in;
    x->read = x->rejected = x->loaded = 0;
    *skipped = 0;

    if (src) { /* postgres: COPY (SELECT ...) TO STDOUT, parsed like the CSV file */
        if ((rc = etl_pg_feed_open(x, src, in, &feed, &fd)) != 0) return rc;
    } else {
        fd = open(in->path, O_RDONLY);
        if (fd < 0) return px_err_set(x->e, PX_EIO, "cannot open '%s': %s", in->path, strerror(errno));
    }

    if (x->p->format == PX_FMT_SYNPUF) rc = etl_synpuf_file(x, fd);
    else rc = etl_canonical_file(x, fd);
    close(fd);
    if (feed) rc = etl_pg_feed_close(x, feed, rc);
    if (rc != 0) return rc;
    if (src) {
        /* a source table's fingerprint is known only now: unchanged means skip */
        char q[256];
        snprintf(q, sizeof q, PRIOR_BATCH_SQL, in->sha);
        char prior[32] = "";
        if (px_db_scalar(x->c, x->e, prior, sizeof prior, q) != 0) return x->e->code;
        if (prior[0] && !x->p->force) {
            in->prior_batch = atoll(prior);
            *skipped = 1;
            return px_db_exec(x->c, x->e, "ROLLBACK TO SAVEPOINT px_input");
        }
    }
    return etl_file_done(x);
}

static int open_spools(etl_ctx *x)
{
    x->rej = tmpfile();
    x->spool = tmpfile();
    x->warn = tmpfile();
    x->patients = px_keymap_new(sizeof(etl_patient));
    x->encounters = px_keymap_new(sizeof(etl_encounter));
    if (!x->rej || !x->spool || !x->warn) return px_err_set(x->e, PX_EIO, "cannot create spool files: %s", strerror(errno));
    if (!x->patients || !x->encounters) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    return 0;
}

static void close_ctx(etl_ctx *x)
{
    EVP_MD_CTX_free(x->md);
    if (x->rej) fclose(x->rej);
    if (x->spool) fclose(x->spool);
    if (x->warn) fclose(x->warn);
    px_keymap_free(x->patients);
    px_keymap_free(x->encounters);
    px_keymap_free(x->facilities);
    px_keymap_free(x->clinicians);
    px_buf_release(&x->copy.buf);
    px_pseudo_free(x->ps);
    if (x->c) PQfinish(x->c);
}

static const char *fmt_name(px_etl_format f)
{
    return f == PX_FMT_SYNPUF ? "synpuf" : f == PX_FMT_CANONICAL ? "canonical" : f == PX_FMT_FHIR ? "fhir" : "postgres";
}

/* After a batch that drew an id did not commit: rolls back what is left of its
 * transaction and records the batch in etl.failed_batches, in a transaction of
 * its own, so that the id is not a silent gap. Best effort: a connection that is
 * gone records nothing (the log has the error). */
static void record_failure(etl_ctx *x, const char *srcname, const char *started, const px_etl_result *r)
{
    if (!x->c || x->batch <= 0 || PQstatus(x->c) != CONNECTION_OK) return;
    PGTransactionStatusType ts = PQtransactionStatus(x->c);
    if (ts == PQTRANS_ACTIVE) return; /* a command still running: the connection cannot be reused */
    if (ts != PQTRANS_IDLE && px_db_exec(x->c, NULL, "ROLLBACK") != 0) return;
    char reason[2048], bid[32], nread[32], nrej[32];
    snprintf(reason, sizeof reason, "%s%s%s", x->e->msg, x->e->detail[0] ? ": " : "", x->e->detail);
    snprintf(bid, sizeof bid, "%lld", x->batch);
    snprintf(nread, sizeof nread, "%lld", r->rows_read);
    snprintf(nrej, sizeof nrej, "%lld", r->rows_rejected);
    const char *params[7] = {bid, fmt_name(x->p->format), srcname, started, nread, nrej, reason};
    PGresult *res = PQexecParams(x->c, "INSERT INTO etl.failed_batches (batch_id, format, source, started_at,"
                                       " rows_read, rows_rejected, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                                       " ON CONFLICT (batch_id) DO NOTHING",
                                 7, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        px_log(PX_LOG_WARN, "cannot record failed batch %lld: %s", x->batch, PQresultErrorMessage(res));
    PQclear(res);
}

/* Loads each input not loaded before (the canonical, synpuf and postgres
 * formats: one input at a time). */
static int load_inputs(etl_ctx *x, etl_input *inputs, int n, PGconn *src, px_etl_result *r)
{
    int rc;
    px_err *e = x->e;
    for (int i = 0; i < n; i++) {
        if (inputs[i].prior_batch) continue;
        int skipped = 0;
        if (src && (rc = px_db_exec(x->c, e, "SAVEPOINT px_input")) != 0) return rc;
        if ((rc = load_input(x, &inputs[i], src, &skipped)) != 0) return rc;
        x->done_bytes += inputs[i].bytes;
        if (skipped) {
            r->files_skipped++;
            if (inputs[i].table == PX_TAB_PATIENTS) { /* rolled back: the warehouse's rows hold */
                px_keymap_free(x->patients);
                if (!(x->patients = px_keymap_new(sizeof(etl_patient)))) {
                    rc = px_err_set(e, PX_ENOMEM, "out of memory");
                    return rc;
                }
            }
            if (inputs[i].table == PX_TAB_ENCOUNTERS) { /* nothing of it is in this batch */
                px_keymap_free(x->encounters);
                if (!(x->encounters = px_keymap_new(sizeof(etl_encounter)))) {
                    rc = px_err_set(e, PX_ENOMEM, "out of memory");
                    return rc;
                }
            }
            continue;
        }
        r->files_loaded++;
        r->rows_read += x->read;
        r->rows_loaded += x->loaded;
        r->rows_rejected += x->rejected;
    }
    return 0;
}

int px_etl_load(const px_config *cfg, const px_etl_params *p, px_etl_result *r, px_err *e)
{
    etl_ctx x;
    etl_input *inputs = NULL;
    int n = 0, rc;
    char srcname[4096] = "", started[64] = "";
    PGconn *src = NULL;
    memset(&x, 0, sizeof x);
    memset(r, 0, sizeof *r);
    x.cfg = cfg;
    x.p = p;
    x.e = e;
    x.today = px_date_today();
    if (p->today && px_date_parse_iso(p->today, strlen(p->today), &x.today) != 0)
        return px_err_set(e, PX_EINVAL, "bad reference date '%s'", p->today);

    if ((rc = etl_discover(p, &inputs, &n, &src, e)) != 0) goto out;
    if (!src)
        for (int i = 0; i < n; i++)
            if ((rc = etl_sha256_file(inputs[i].path, inputs[i].sha, &inputs[i].bytes, e)) != 0) goto out;
    if (!(x.c = px_db_connect(cfg, e))) { /* initialises a new home, key included */
        rc = e->code;
        goto out;
    }
    if (!(x.ps = px_pseudo_load(cfg->key_file, e))) {
        rc = e->code;
        goto out;
    }
    /* JIT compilation costs seconds on the merge queries and saves nothing on set-based joins */
    if ((rc = px_db_exec(x.c, e, "SET jit = off; BEGIN")) != 0) goto out;
    char q[512];
    snprintf(q, sizeof q, "SELECT pg_advisory_xact_lock(%d)", PX_ETL_LOCK);
    if ((rc = px_db_exec(x.c, e, q)) != 0) goto out;
    {
        /* a load killed between its PREPAREs on the shards and their COMMIT
         * PREPARED left them in doubt: resolved first (under the lock) */
        px_shards_recovery rec;
        if ((rc = px_shards_recover(x.c, 1, &rec, e)) != 0) goto out;
        if (rec.committed + rec.rolled_back > 0)
            px_buf_printf(&x.notes, "resolved %d prepared transactions an interrupted load left on the shards: %d "
                          "committed, %d rolled back\n", rec.committed + rec.rolled_back, rec.committed,
                          rec.rolled_back);
    }
    /* which files were loaded before (checked under the lock) */
    int todo = 0;
    for (int i = 0; i < n; i++) {
        char prior[32] = "";
        if (!src) {
            snprintf(q, sizeof q, PRIOR_BATCH_SQL, inputs[i].sha);
            if ((rc = px_db_scalar(x.c, e, prior, sizeof prior, q)) != 0) goto out;
            if (p->force) prior[0] = '\0';
            /* the same bytes twice in one source: load them once */
            for (int k = 0; k < i && !prior[0]; k++)
                if (strcmp(inputs[k].sha, inputs[i].sha) == 0) snprintf(prior, sizeof prior, "-1");
            if (prior[0]) {
                inputs[i].prior_batch = atoll(prior);
                r->files_skipped++;
                continue;
            }
        }
        x.total_bytes += inputs[i].bytes;
        todo++;
    }
    if (todo == 0) {
        px_db_exec(x.c, NULL, "ROLLBACK");
        rc = px_err_set(e, PX_ENOTHING, "nothing to load: all %d input%s were loaded before (batch %lld)", n,
                        n == 1 ? "" : "s", inputs[0].prior_batch);
        goto out;
    }
    if (src) etl_redact_uri(p->source, srcname, sizeof srcname);
    else if (!realpath(p->source, srcname)) snprintf(srcname, sizeof srcname, "%s", p->source);
    {
        const char *params[2] = {fmt_name(p->format), srcname};
        PGresult *res = PQexecParams(x.c, "INSERT INTO etl.batches (format, source) VALUES ($1, $2)"
                                     " RETURNING batch_id, started_at::text", 2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = px_err_set(e, PX_EDB, "cannot open a batch");
            px_err_detail(e, "%s", PQresultErrorMessage(res));
            PQclear(res);
            goto out;
        }
        x.batch = atoll(PQgetvalue(res, 0, 0));
        snprintf(started, sizeof started, "%s", PQgetvalue(res, 0, 1));
        PQclear(res);
    }
    if ((rc = open_spools(&x)) != 0) goto out;
    if ((rc = etl_shards_begin(&x)) != 0) goto out;
    if (p->format == PX_FMT_FHIR) {
        if ((rc = etl_fhir_load(&x, inputs, n, r)) != 0) goto out;
    } else {
        rc = p->format == PX_FMT_SYNPUF ? etl_synpuf_begin(&x) : etl_canonical_begin(&x);
        if (rc != 0) goto out;
        if ((rc = load_inputs(&x, inputs, n, src, r)) != 0) goto out;
    }
    if (p->on_progress) p->on_progress(p->progress_arg, "done", "", 100);
    if (r->files_loaded == 0) {
        /* nothing failed: the batch id goes back (sequences ignore ROLLBACK; no other
         * load can have drawn one while this one holds the lock), so that a scheduler
         * polling an unchanged source leaves neither gaps nor failed batches */
        snprintf(q, sizeof q, "SELECT setval(pg_get_serial_sequence('etl.batches', 'batch_id'), %lld, false)", x.batch);
        if (px_db_exec(x.c, NULL, q) == 0) x.batch = 0;
        px_db_exec(x.c, NULL, "ROLLBACK");
        rc = px_err_set(e, PX_ENOTHING, "nothing to load: every source table is unchanged since it was loaded");
        goto out;
    }
    x.in = NULL;
    if (r->rows_rejected > 0) { /* over --max-reject-rate: roll back, say why */
        char summary[1024];
        long long counted = 0;
        if ((rc = etl_reject_summary(&x, summary, sizeof summary, &counted)) != 0) goto out;
        if ((double)counted * 100.0 > p->max_reject_rate * (double)r->rows_read) {
            rc = px_err_set(e, PX_EREJECTS, "batch %lld rejected %lld of %lld rows (%.1f%%), more than "
                            "--max-reject-rate %g%%: rolled back, nothing was stored", x.batch, counted,
                            r->rows_read, 100.0 * (double)counted / (double)r->rows_read, p->max_reject_rate);
            px_err_detail(e, "%s", summary);
            px_err_hint(e, "correct the extract or the options (--as-of, --future-dates allow) and load it again: "
                           "nothing was committed, so no --force is needed; a higher --max-reject-rate keeps "
                           "the valid rows whatever the rate");
            goto out;
        }
    }
    snprintf(q, sizeof q,
             "UPDATE etl.batches SET finished_at = clock_timestamp(), rows_read = %lld, rows_loaded = %lld,"
             " rows_rejected = %lld, rows_skipped = %lld WHERE batch_id = $1",
             r->rows_read, r->rows_loaded, r->rows_rejected, r->rows_skipped);
    if ((rc = etl_sql(&x, q, NULL, NULL)) != 0) goto out;
    snprintf(q, sizeof q,
             "INSERT INTO audit.events (action, object, detail) VALUES ('etl.load', 'batch ' || $1,"
             " jsonb_build_object('files', %d, 'rows_read', %lld, 'rows_loaded', %lld, 'rows_rejected', %lld,"
             " 'file', nullif($2, '')))",
             r->files_loaded, r->rows_read, r->rows_loaded, r->rows_rejected);
    if ((rc = etl_sql(&x, q, NULL, NULL)) != 0) goto out;
    /* sharded: every shard's part prepared, then the decision here, then theirs */
    if (x.shards && (rc = etl_shards_ship(&x)) != 0) goto out;
    if ((rc = px_db_exec(x.c, e, "COMMIT")) != 0) goto out;
    if (x.shards) etl_shards_commit(&x);
    r->batch_id = x.batch;
    px_log(PX_LOG_INFO, "batch %lld committed: %d files, %lld read, %lld loaded, %lld rejected", x.batch,
           r->files_loaded, r->rows_read, r->rows_loaded, r->rows_rejected);
out:
    if (rc != 0 && rc != PX_ENOTHING && x.c) {
        if (p->on_progress) p->on_progress(p->progress_arg, "failed", "", -1);
        px_log(PX_LOG_ERROR, "load of %s source failed: %s", fmt_name(p->format), e->msg);
    }
    etl_shards_end(&x, rc != 0);
    if (rc != 0) record_failure(&x, srcname, started, r);
    if (x.notes.data) snprintf(r->notes, sizeof r->notes, "%s", x.notes.data);
    px_buf_release(&x.notes);
    close_ctx(&x);
    if (src) PQfinish(src);
    free(inputs);
    return rc;
}
