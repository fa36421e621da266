/* shard_load.c: an ETL batch into a distributed warehouse (README, Scale-out),
 * atomic across the shards by two-phase commit.
 *
 * The coordinator runs the single-node loader unchanged, in its one batch
 * transaction: every check, merge and reject is the same. Only where its rows
 * go differs: the loader's statements are rewritten (etl_shard_sql) so that they
 * read wh.fact_<t> as px_fact_<t> (the shards' rows and this batch's so far) and
 * INSERT INTO the session's pending table px_pending_<t>; migration 018's
 * bulk_finish moves the load tables there too. Before the batch commits here,
 * etl_shards_ship sends each shard its rows, chosen by the partition constraint
 * of the coordinator's hash partitions on that shard (PostgreSQL's own routing,
 * satisfies_hash_partition), in a transaction on a libpq connection of its own,
 * and PREPAREs it as px_<batch>_<shard>. The coordinator then commits its
 * bookkeeping (etl.batches: the decision), and etl_shards_commit runs COMMIT
 * PREPARED on every shard. A load killed anywhere leaves either no decision
 * (the prepared parts are rolled back) or a recorded batch (they are committed):
 * px_shards_recover (shards.c) applies that rule on the next load, at db start
 * and in db shards recover.
 *
 * PX_TEST_KILL_AT=<point> makes the loader SIGKILL itself at a named point (the
 * test of recovery): ship (every shard has its rows, none prepared), prepared
 * (the first shard prepared), committed (the batch committed here, no shard
 * committed), commit_prepared (the first shard committed); and in `db shards
 * add` after distribute (shards.c): rebalance_ship, rebalance_prepared,
 * rebalance_committed. Unset: no effect. */
#include "engine/etl_int.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const tables[] = {"fact_encounter", "fact_diagnosis", "fact_procedure"};
#define N_TAB 3

typedef struct shard_conn {
    char server[64]; /* foreign server px_shard_<id> */
    int id;
    PGconn *s;
    int prepared;    /* its part is prepared (PREPARE TRANSACTION done) */
    int committed;
} shard_conn;

struct etl_shards {
    shard_conn *sh;
    int n;
};

void px_test_kill_point(const char *point)
{
    const char *at = getenv("PX_TEST_KILL_AT");
    if (!at || strcmp(at, point) != 0) return;
    px_log(PX_LOG_WARN, "PX_TEST_KILL_AT=%s: the loader kills itself", point);
    raise(SIGKILL);
}

int etl_shard_sql(const char *sql, px_buf *out)
{
    static const char pre[] = "wh.fact_", ins[] = "INSERT INTO ";
    const char *p = sql, *hit;
    int n = 0;
    px_buf_reset(out);
    while ((hit = strstr(p, pre)) != NULL) {
        const char *name = hit + 3;
        size_t len = 0;
        for (int t = 0; t < N_TAB && !len; t++) {
            size_t l = strlen(tables[t]);
            char next = name[l];
            if (strncmp(name, tables[t], l) == 0 && !(next == '_' || (next >= 'a' && next <= 'z') ||
                                                      (next >= '0' && next <= '9')))
                len = l;
        }
        if (!len) { /* wh.fact_encounter_s0 and the like: not the table */
            px_buf_add(out, p, (size_t)(hit + sizeof pre - 1 - p));
            p = hit + sizeof pre - 1;
            continue;
        }
        int write = hit - sql >= (long)(sizeof ins - 1) && strncmp(hit - (sizeof ins - 1), ins, sizeof ins - 1) == 0;
        px_buf_add(out, p, (size_t)(hit - p));
        px_buf_printf(out, "%s%.*s", write ? "px_pending_" : "px_", (int)len, name);
        p = name + len;
        n++;
    }
    px_buf_adds(out, p);
    return px_buf_failed(out) ? px_buf_failed(out) : n > 0;
}

int etl_shards_begin(etl_ctx *x)
{
    char dist[8] = "";
    int rc;
    PGresult *r = NULL;
    if ((rc = px_db_scalar(x->c, x->e, dist, sizeof dist, "SELECT wh.is_distributed('fact_encounter')")) != 0) return rc;
    if (dist[0] != 't') return 0;
    /* the pending tables: this batch's rows of each distributed table (patient_id
     * of diagnoses and procedures filled before they are sent) */
    for (int t = 0; t < N_TAB; t++) {
        if ((rc = px_db_execf(x->c, x->e, "CREATE TEMP TABLE px_pending_%s (LIKE wh.%s INCLUDING DEFAULTS)",
                              tables[t], tables[t])) != 0)
            return rc;
        if (t > 0 && (rc = px_db_execf(x->c, x->e, "ALTER TABLE px_pending_%s ALTER COLUMN patient_id DROP NOT NULL",
                                       tables[t])) != 0)
            return rc;
        if ((rc = px_db_execf(x->c, x->e,
                              "CREATE TEMP VIEW px_%s AS SELECT * FROM wh.%s UNION ALL SELECT * FROM px_pending_%s",
                              tables[t], tables[t], tables[t])) != 0)
            return rc;
    }
    /* the shards that hold partitions, connected now: a shard that is down fails
     * the load before anything is read */
    if ((rc = px_db_query(x->c, x->e, "cannot read the shards", &r,
                          "SELECT DISTINCT s.srvname, w.shard_id FROM pg_inherits i"
                          " JOIN pg_foreign_table f ON f.ftrelid = i.inhrelid"
                          " JOIN pg_foreign_server s ON s.oid = f.ftserver"
                          " JOIN wh.shards w ON w.server_name = s.srvname"
                          " WHERE i.inhparent IN ('wh.fact_encounter'::regclass, 'wh.fact_diagnosis'::regclass,"
                          " 'wh.fact_procedure'::regclass) ORDER BY 2",
                          0, NULL)) != 0)
        return rc;
    struct etl_shards *S = calloc(1, sizeof *S);
    if (S) S->sh = calloc((size_t)PQntuples(r) + 1, sizeof *S->sh);
    if (!S || !S->sh) {
        free(S);
        PQclear(r);
        return px_err_set(x->e, PX_ENOMEM, "out of memory");
    }
    x->shards = S;
    for (int i = 0; i < PQntuples(r); i++) {
        shard_conn *sc = &S->sh[S->n++];
        snprintf(sc->server, sizeof sc->server, "%s", PQgetvalue(r, i, 0));
        sc->id = atoi(PQgetvalue(r, i, 1));
        if (!(sc->s = px_shards_connect(x->c, sc->server, x->e))) {
            rc = x->e->code ? x->e->code : PX_EDB;
            break;
        }
    }
    PQclear(r);
    if (rc == 0 && S->n == 0) rc = px_err_set(x->e, PX_ESTATE, "the fact tables are distributed but have no shard");
    if (rc == 0) px_log(PX_LOG_INFO, "batch %lld: a sharded load over %d shards", x->batch, S->n);
    return rc;
}

static shard_conn *find_shard(struct etl_shards *S, const char *server)
{
    for (int i = 0; i < S->n; i++)
        if (strcmp(S->sh[i].server, server) == 0) return &S->sh[i];
    return NULL;
}

/* Streams COPY (select) TO STDOUT on the coordinator into COPY into on shard s;
 * *rows gets the shard's count. */
static int pipe_rows(etl_ctx *x, shard_conn *sc, const char *select, const char *into, long long *rows)
{
    int rc = px_copy_pipe(x->c, select, sc->s, into, rows, x->e);
    if (rc != 0) px_err_wrap(x->e, PX_EDB, "cannot send batch %lld's rows to shard %s", x->batch, sc->server);
    return rc;
}

int etl_shards_ship(etl_ctx *x)
{
    struct etl_shards *S = x->shards;
    PGresult *route = NULL;
    px_buf sel = {0}, into = {0};
    long long sent[N_TAB] = {0};
    int rc = 0;
    etl_progress_phase(x, "sending to the shards");
    /* the hash key of diagnoses and procedures: their stay's patient, from this
     * batch or (codes of an earlier stay) from the shards */
    for (int t = 1; t < N_TAB && rc == 0; t++) {
        rc = px_db_execf(x->c, x->e,
                         "UPDATE px_pending_%1$s d SET patient_id = e.patient_id FROM px_pending_fact_encounter e"
                         " WHERE d.patient_id IS NULL AND e.encounter_id = d.encounter_id"
                         " AND e.admission_date = d.admission_date;"
                         " UPDATE px_pending_%1$s d SET patient_id = (SELECT e.patient_id FROM wh.fact_encounter e"
                         " WHERE e.encounter_id = d.encounter_id AND e.admission_date = d.admission_date LIMIT 1)"
                         " WHERE d.patient_id IS NULL",
                         tables[t]);
        char orphans[32] = "";
        if (rc == 0 && (rc = px_db_scalar(x->c, x->e, orphans, sizeof orphans, t == 1
                                          ? "SELECT count(*) FROM px_pending_fact_diagnosis WHERE patient_id IS NULL"
                                          : "SELECT count(*) FROM px_pending_fact_procedure WHERE patient_id IS NULL")) == 0 &&
            atoll(orphans) != 0)
            rc = px_err_set(x->e, PX_ECORRUPT, "%s rows of wh.%s in batch %lld have no stay to place them by", orphans,
                            tables[t], x->batch);
    }
    if (rc != 0) goto out;
    /* where each row goes: the partition constraints of the coordinator's hash
     * partitions on each shard, the rule its own INSERTs are routed by */
    if ((rc = px_db_query(x->c, x->e, "cannot read the partitions of the shards", &route,
                          "SELECT t.relname, s.srvname,"
                          " string_agg('(' || pg_get_partition_constraintdef(p.oid) || ')', ' OR ' ORDER BY p.relname),"
                          " (SELECT quote_ident(option_value) FROM pg_options_to_table(f.ftoptions)"
                          "  WHERE option_name = 'schema_name') || '.' ||"
                          " (SELECT quote_ident(option_value) FROM pg_options_to_table(f.ftoptions)"
                          "  WHERE option_name = 'table_name'),"
                          " (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute"
                          "  WHERE attrelid = t.oid AND attnum > 0 AND NOT attisdropped)"
                          " FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid JOIN pg_class t ON t.oid = i.inhparent"
                          " JOIN pg_foreign_table f ON f.ftrelid = p.oid JOIN pg_foreign_server s ON s.oid = f.ftserver"
                          " WHERE i.inhparent IN ('wh.fact_encounter'::regclass, 'wh.fact_diagnosis'::regclass,"
                          " 'wh.fact_procedure'::regclass) GROUP BY 1, 2, 4, 5 ORDER BY 2, 1",
                          0, NULL)) != 0)
        goto out;
    for (int i = 0; i < S->n && rc == 0; i++) rc = px_db_exec(S->sh[i].s, x->e, "BEGIN");
    for (int i = 0; i < PQntuples(route) && rc == 0; i++) {
        const char *tab = PQgetvalue(route, i, 0), *server = PQgetvalue(route, i, 1);
        shard_conn *sc = find_shard(S, server);
        int t = 0;
        while (t < N_TAB && strcmp(tables[t], tab) != 0) t++;
        if (!sc || t == N_TAB || PQgetisnull(route, i, 3)) {
            rc = px_err_set(x->e, PX_ESTATE, "wh.%s has a partition on %s, which is not a shard of wh.shards", tab, server);
            break;
        }
        px_buf_reset(&sel);
        px_buf_reset(&into);
        px_buf_printf(&sel, "COPY (SELECT %s FROM px_pending_%s WHERE %s) TO STDOUT (FORMAT binary)",
                      PQgetvalue(route, i, 4), tab, PQgetvalue(route, i, 2));
        px_buf_printf(&into, "COPY %s (%s) FROM STDIN (FORMAT binary)", PQgetvalue(route, i, 3),
                      PQgetvalue(route, i, 4));
        if (px_buf_failed(&sel) || px_buf_failed(&into)) {
            rc = px_err_set(x->e, PX_ENOMEM, "out of memory");
            break;
        }
        long long rows = 0;
        if ((rc = pipe_rows(x, sc, sel.data, into.data, &rows)) != 0) break;
        sent[t] += rows;
        px_log(PX_LOG_DEBUG, "batch %lld: %lld rows of wh.%s to shard %s", x->batch, rows, tab, server);
    }
    if (rc != 0) goto out;
    /* every row of the batch went to exactly one shard */
    for (int t = 0; t < N_TAB && rc == 0; t++) {
        char pending[32] = "";
        char q[128];
        snprintf(q, sizeof q, "SELECT count(*) FROM px_pending_%s", tables[t]);
        if ((rc = px_db_scalar(x->c, x->e, pending, sizeof pending, q)) != 0) break;
        if (atoll(pending) != sent[t])
            rc = px_err_set(x->e, PX_ECORRUPT, "batch %lld: %s rows of wh.%s, %lld sent to the shards", x->batch,
                            pending, tables[t], sent[t]);
    }
    if (rc == 0)
        rc = px_db_exec(x->c, x->e, "DROP TABLE px_pending_fact_encounter, px_pending_fact_diagnosis,"
                                    " px_pending_fact_procedure CASCADE");
    if (rc != 0) goto out;
    px_test_kill_point("ship");
    for (int i = 0; i < S->n && rc == 0; i++) {
        shard_conn *sc = &S->sh[i];
        char q[96];
        snprintf(q, sizeof q, "PREPARE TRANSACTION 'px_%lld_%d'", x->batch, sc->id);
        if ((rc = px_db_exec(sc->s, x->e, q)) != 0) {
            px_err_wrap(x->e, PX_EDB, "cannot prepare batch %lld on shard %s", x->batch, sc->server);
            px_err_hint(x->e, "a shard needs max_prepared_transactions > 0");
            break;
        }
        sc->prepared = 1;
        if (i == 0) px_test_kill_point("prepared");
    }
    if (rc == 0)
        px_log(PX_LOG_INFO, "batch %lld prepared on %d shards: %lld stays, %lld diagnoses, %lld procedures", x->batch,
               S->n, sent[0], sent[1], sent[2]);
out:
    PQclear(route);
    px_buf_release(&sel);
    px_buf_release(&into);
    return rc;
}

void etl_shards_commit(etl_ctx *x)
{
    struct etl_shards *S = x->shards;
    px_test_kill_point("committed");
    for (int i = 0; i < S->n; i++) {
        shard_conn *sc = &S->sh[i];
        px_err e2 = {0};
        char q[96];
        snprintf(q, sizeof q, "COMMIT PREPARED 'px_%lld_%d'", x->batch, sc->id);
        if (px_db_exec(sc->s, &e2, q) != 0) {
            /* the batch is committed (the coordinator decided): the part stays
             * prepared until recovery commits it */
            px_log(PX_LOG_ERROR, "batch %lld committed, but not yet on shard %s: %s %s", x->batch, sc->server, e2.msg,
                   e2.detail);
            px_buf_printf(&x->notes, "batch %lld: its rows on shard %s are prepared but not yet committed (%s): run "
                          "prognos db shards recover\n", x->batch, sc->server, e2.detail[0] ? e2.detail : e2.msg);
            continue;
        }
        sc->committed = 1;
        if (i == 0) px_test_kill_point("commit_prepared");
    }
}

void etl_shards_end(etl_ctx *x, int failed)
{
    struct etl_shards *S = x->shards;
    if (!S) return;
    /* a failed batch did not commit here when the coordinator's connection still
     * answers (a COMMIT that failed said so): its prepared parts go. With the
     * connection lost the outcome is unknown: recovery decides. */
    int undecided = !x->c || PQstatus(x->c) != CONNECTION_OK;
    for (int i = 0; i < S->n; i++) {
        shard_conn *sc = &S->sh[i];
        if (failed && sc->prepared && !sc->committed && !undecided && sc->s) {
            char q[96];
            snprintf(q, sizeof q, "ROLLBACK PREPARED 'px_%lld_%d'", x->batch, sc->id);
            px_err e2 = {0};
            if (px_db_exec(sc->s, &e2, q) != 0)
                px_log(PX_LOG_WARN, "batch %lld: cannot roll back its part on shard %s (recovery will): %s",
                       x->batch, sc->server, e2.detail);
        }
        if (sc->s) PQfinish(sc->s); /* an unprepared part is rolled back by the shard */
    }
    free(S->sh);
    free(S);
    x->shards = NULL;
}
