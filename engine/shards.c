/* shards.c: a sharded warehouse over postgres_fdw. px_shards_add registers a
 * shard (its tables in schema px_shard there, a foreign server and user mapping
 * here, a row of wh.shards); px_shards_distribute turns a single-node
 * warehouse's fact tables into PARTITION BY HASH (patient_id) tables whose
 * partitions are foreign tables on the shards, moving the rows. The feature and
 * KPI SQL is the same as on one node; px_shards_tune and px_shards_union make
 * its aggregates run on the shards. Design and limits: README, Scale-out. */
#include "engine/internal.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const fact_tables[] = {"fact_encounter", "fact_diagnosis", "fact_procedure"};
#define N_FACT 3

/* libpq connection options passed on to the foreign server (user and password
 * go to the user mapping; postgres_fdw sets client_encoding itself) */
static const char *const server_opts[] = {"host", "hostaddr", "port", "dbname", "sslmode", "sslrootcert",
                                          "sslcert", "sslkey", "connect_timeout", NULL};

static int is_sharded(PGconn *c, int *sharded, px_err *e)
{
    char *v = NULL;
    int rc = px_db_value(c, e, "cannot read the fact tables' partitioning", &v,
                         "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table"
                         " WHERE partrelid = 'wh.fact_encounter'::regclass AND partstrat = 'h')",
                         0, NULL);
    *sharded = v && strcmp(v, "t") == 0;
    free(v);
    return rc;
}

/* "name type [NOT NULL], ..." of a coordinator fact table, malloc'd (caller frees) */
static int column_ddl(PGconn *c, const char *table, char **out, px_err *e)
{
    char reg[64];
    snprintf(reg, sizeof reg, "wh.%s", table);
    const char *pv[] = {reg};
    int rc = px_db_value(c, e, "cannot read a fact table's columns", out,
                         "SELECT string_agg(format('%I %s%s', attname, format_type(atttypid, atttypmod),"
                         " CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY attnum)"
                         " FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                         1, pv);
    if (rc == 0 && !*out) rc = px_err_set(e, PX_EDB, "wh.%s has no columns", table);
    return rc;
}

/* Appends " key 'value'," to b for a quoted option; 0 or PX_ENOMEM. */
static int add_opt(PGconn *c, px_buf *b, const char *key, const char *val)
{
    char *q = PQescapeLiteral(c, val, strlen(val));
    if (!q) return PX_ENOMEM;
    int rc = px_buf_printf(b, "%s%s %s", b->len && b->data[b->len - 1] != '(' ? ", " : "", key, q);
    PQfreemem(q);
    return rc;
}

/* ---- adding a shard to a distributed warehouse --------------------------- */

static int resolve_prepared(PGconn *c, PGconn *s, const char *server, const char *pattern, px_shards_recovery *rec,
                            px_err *e);

typedef struct rb_shard {
    int id;
    char server[64];
    PGconn *s;
    int prepared, committed;
} rb_shard;

typedef struct rebalance {
    rb_shard *sh;
    int n;              /* shards, the new one last */
    int new_id;
    long long moved[N_FACT];
} rebalance;

/* Re-partitions the fact tables over n shards (the new one included, which is
 * empty): shard k (by shard_id) gets hash remainder k of modulus n. Each shard's
 * rows of another remainder are copied to that remainder's shard and deleted
 * here, all in one transaction per shard, then PREPAREd ('pxs_<new>_<shard>');
 * the coordinator's partitions are rebuilt in its open transaction. The caller
 * commits the coordinator (the decision: the new row of wh.shards) and then
 * calls rebalance_commit. The remainders are computed on each shard by
 * satisfies_hash_partition over a hash-partitioned px_shard.px_route (patient_id
 * uuid): PostgreSQL's hash partitioning of a uuid, the same function and seed
 * as the coordinator's partitions use. */
static int rebalance_move(PGconn *c, rebalance *rb, px_err *e)
{
    PGresult *r = NULL;
    px_buf out = {0}, in = {0}, sql = {0};
    char *cols = NULL;
    int rc = 0, n = rb->n;
    long long before = 0, after = 0;
    for (int k = 0; k < n && rc == 0; k++) {
        if (!(rb->sh[k].s = px_shards_connect(c, rb->sh[k].server, e))) {
            rc = e->code ? e->code : PX_EDB;
            break;
        }
        rc = px_db_exec(rb->sh[k].s, e,
                        "CREATE TABLE IF NOT EXISTS px_shard.px_route (patient_id uuid) PARTITION BY HASH (patient_id);"
                        " BEGIN");
    }
    for (int t = 0; t < N_FACT && rc == 0; t++) {
        const char *tab = fact_tables[t];
        char reg[64];
        snprintf(reg, sizeof reg, "wh.%s", tab);
        const char *pv[] = {reg};
        free(cols);
        cols = NULL;
        if ((rc = px_db_value(c, e, "cannot read a fact table's columns", &cols,
                              "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute"
                              " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                              1, pv)) != 0)
            break;
        long long b = 0, a = 0, from[64] = {0};
        for (int j = 0; j < n && rc == 0; j++) {
            char v[32] = "";
            px_buf_reset(&sql);
            px_buf_printf(&sql, "SELECT count(*) FROM px_shard.%s", tab);
            if ((rc = px_db_scalar(rb->sh[j].s, e, v, sizeof v, sql.data)) == 0) b += atoll(v);
        }
        for (int j = 0; j < n && rc == 0; j++)
            for (int k = 0; k < n && rc == 0; k++) {
                if (k == j) continue;
                long long rows = 0;
                px_buf_reset(&out);
                px_buf_reset(&in);
                px_buf_printf(&out, "COPY (SELECT %s FROM px_shard.%s WHERE satisfies_hash_partition("
                              "'px_shard.px_route'::regclass, %d, %d, patient_id)) TO STDOUT (FORMAT binary)",
                              cols, tab, n, k);
                px_buf_printf(&in, "COPY px_shard.%s (%s) FROM STDIN (FORMAT binary)", tab, cols);
                if (px_buf_failed(&out) || px_buf_failed(&in)) {
                    rc = px_err_set(e, PX_ENOMEM, "out of memory");
                    break;
                }
                if ((rc = px_copy_pipe(rb->sh[j].s, out.data, rb->sh[k].s, in.data, &rows, e)) != 0) {
                    px_err_wrap(e, PX_EDB, "cannot move rows of wh.%s from shard %s to shard %s", tab,
                                rb->sh[j].server, rb->sh[k].server);
                    break;
                }
                from[j] += rows;
                rb->moved[t] += rows;
            }
        for (int j = 0; j < n && rc == 0; j++) {
            px_buf_reset(&sql);
            px_buf_printf(&sql, "DELETE FROM px_shard.%s WHERE NOT satisfies_hash_partition("
                          "'px_shard.px_route'::regclass, %d, %d, patient_id)", tab, n, j);
            PGresult *d = PQexec(rb->sh[j].s, sql.data);
            if (PQresultStatus(d) != PGRES_COMMAND_OK) rc = px_db_fail(e, rb->sh[j].s, d, "cannot delete the moved rows");
            else if (atoll(PQcmdTuples(d)) != from[j])
                rc = px_err_set(e, PX_ECORRUPT, "shard %s: %s rows of wh.%s left it, %lld were copied elsewhere",
                                rb->sh[j].server, PQcmdTuples(d), tab, from[j]);
            PQclear(d);
        }
        for (int j = 0; j < n && rc == 0; j++) {
            char v[32] = "";
            px_buf_reset(&sql);
            px_buf_printf(&sql, "SELECT count(*) FROM px_shard.%s", tab);
            if ((rc = px_db_scalar(rb->sh[j].s, e, v, sizeof v, sql.data)) == 0) a += atoll(v);
        }
        if (rc == 0 && a != b)
            rc = px_err_set(e, PX_ECORRUPT, "wh.%s: %lld rows on the shards before, %lld after moving", tab, b, a);
        before += b;
        after += a;

        /* here: the same table over n foreign partitions, remainder k on shard k */
        px_buf_reset(&sql);
        px_buf_printf(&sql, "CREATE TABLE wh.%s_hash (LIKE wh.%s INCLUDING DEFAULTS) PARTITION BY HASH (patient_id);",
                      tab, tab);
        for (int k = 0; k < n; k++)
            px_buf_printf(&sql,
                          " CREATE FOREIGN TABLE wh.%s_n%d PARTITION OF wh.%s_hash FOR VALUES WITH (MODULUS %d,"
                          " REMAINDER %d) SERVER %s OPTIONS (schema_name 'px_shard', table_name '%s');",
                          tab, rb->sh[k].id, tab, n, k, rb->sh[k].server, tab);
        px_buf_printf(&sql, " DROP TABLE wh.%s; ALTER TABLE wh.%s_hash RENAME TO %s;", tab, tab, tab);
        for (int k = 0; k < n; k++)
            px_buf_printf(&sql, " ALTER FOREIGN TABLE wh.%s_n%d RENAME TO %s_s%d;", tab, rb->sh[k].id, tab, rb->sh[k].id);
        if (rc == 0 && px_buf_failed(&sql)) rc = px_err_set(e, PX_ENOMEM, "out of memory");
        if (rc == 0 && (rc = px_db_exec(c, e, sql.data)) != 0)
            px_err_wrap(e, PX_EDB, "cannot re-partition wh.%s over %d shards", tab, n);
    }
    if (rc == 0) px_test_kill_point("rebalance_ship");
    for (int k = 0; k < n && rc == 0; k++) {
        char q[96];
        snprintf(q, sizeof q, "PREPARE TRANSACTION 'pxs_%d_%d'", rb->new_id, rb->sh[k].id);
        if ((rc = px_db_exec(rb->sh[k].s, e, q)) != 0) {
            px_err_wrap(e, PX_EDB, "cannot prepare the move on shard %s", rb->sh[k].server);
            break;
        }
        rb->sh[k].prepared = 1;
        if (k == 0) px_test_kill_point("rebalance_prepared");
    }
    if (rc == 0)
        px_log(PX_LOG_INFO, "rebalanced over %d shards: %lld stays, %lld diagnoses, %lld procedures moved (%lld rows)", n,
               rb->moved[0], rb->moved[1], rb->moved[2], before);
    (void)after;
    PQclear(r);
    free(cols);
    px_buf_release(&out);
    px_buf_release(&in);
    px_buf_release(&sql);
    return rc;
}

/* After the coordinator committed (committed = 1: COMMIT PREPARED) or failed
 * (ROLLBACK PREPARED when its connection still answers; else recovery decides);
 * closes the connections. */
static void rebalance_end(PGconn *c, rebalance *rb, int committed)
{
    if (committed) px_test_kill_point("rebalance_committed");
    int undecided = !committed && PQstatus(c) != CONNECTION_OK;
    for (int k = 0; k < rb->n; k++) {
        rb_shard *sh = &rb->sh[k];
        if (sh->s && sh->prepared && !undecided) {
            char q[96];
            px_err e2 = {0};
            snprintf(q, sizeof q, "%s PREPARED 'pxs_%d_%d'", committed ? "COMMIT" : "ROLLBACK", rb->new_id, sh->id);
            if (px_db_exec(sh->s, &e2, q) != 0)
                px_log(PX_LOG_ERROR, "shard %s: %s failed (prognos db shards recover resolves it): %s %s", sh->server,
                       q, e2.msg, e2.detail);
        }
        if (sh->s) PQfinish(sh->s);
    }
    free(rb->sh);
    rb->sh = NULL;
}

int px_shards_add(PGconn *c, const char *uri, int *shard_id, px_err *e)
{
    PQconninfoOption *opts = NULL;
    PGconn *s = NULL;
    char *errmsg = NULL, *next = NULL, *ddl = NULL, *rows = NULL;
    px_buf srv = {0}, map = {0}, info = {0}, sql = {0};
    const char *user = NULL, *password = NULL;
    int rc = 0, in_tx = 0, sharded = 0;
    rebalance rb = {0};
    char moved[128] = "null";
    *shard_id = -1;

    if (!uri || !*uri) return px_err_set(e, PX_EINVAL, "no shard URI given");
    if (!(opts = PQconninfoParse(uri, &errmsg))) {
        rc = px_err_set(e, PX_EINVAL, "'%s' is not a libpq connection string or URI", uri);
        if (errmsg) px_err_detail(e, "%s", errmsg);
        goto out;
    }
    if ((rc = is_sharded(c, &sharded, e)) != 0) goto out;
    /* the shard: reachable, and its tables created (empty) */
    if (!(s = px_db_connect_url(uri, e))) {
        rc = px_err_wrap(e, PX_EDB, "cannot connect to the shard");
        goto out;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val) continue;
        if (strcmp(o->keyword, "user") == 0) user = o->val;
        else if (strcmp(o->keyword, "password") == 0) password = o->val;
    }
    if (!user) user = PQuser(s);
    /* loads commit each shard's part with two-phase commit (shard_load.c) */
    free(rows);
    rows = NULL;
    if ((rc = px_db_value(s, e, "cannot read the shard's settings", &rows, "SHOW max_prepared_transactions", 0,
                          NULL)) != 0)
        goto out;
    if (!rows || atoi(rows) < 1) {
        rc = px_err_set(e, PX_ESTATE, "cannot add the shard: its max_prepared_transactions is %s", rows ? rows : "?");
        px_err_detail(e, "loads into a sharded warehouse commit each shard's part with PREPARE TRANSACTION");
        px_err_hint(e, "set max_prepared_transactions = 10 in the shard's postgresql.conf and restart it "
                       "(embedded clusters of prognos db init have it)");
        goto out;
    }
    if ((rc = px_db_query(s, e, "cannot create schema px_shard on the shard", NULL,
                          "CREATE SCHEMA IF NOT EXISTS px_shard", 0, NULL)) != 0)
        goto out;
    for (int i = 0; i < N_FACT; i++) {
        free(ddl);
        ddl = NULL;
        if ((rc = column_ddl(c, fact_tables[i], &ddl, e)) != 0) goto out;
        sql.len = 0;
        /* diagnoses and procedures carry their stay's patient, the hash key
         * (migration 019: on a single node too) */
        if (px_buf_printf(&sql, "CREATE TABLE IF NOT EXISTS px_shard.%s (%s);"
                          " CREATE INDEX IF NOT EXISTS %s_patient ON px_shard.%s (patient_id, admission_date);"
                          " CREATE INDEX IF NOT EXISTS %s_encounter ON px_shard.%s (encounter_id)",
                          fact_tables[i], ddl, fact_tables[i], fact_tables[i],
                          fact_tables[i], fact_tables[i]) != 0 ||
            px_buf_addc(&sql, '\0') != 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = px_db_exec(s, e, sql.data)) != 0) {
            px_err_wrap(e, PX_EDB, "cannot create px_shard.%s on the shard", fact_tables[i]);
            goto out;
        }
        sql.len = 0;
        if (px_buf_printf(&sql, "SELECT EXISTS (SELECT 1 FROM px_shard.%s)", fact_tables[i]) != 0 ||
            px_buf_addc(&sql, '\0') != 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        free(rows);
        rows = NULL;
        if ((rc = px_db_value(s, e, "cannot read the shard's tables", &rows, sql.data, 0, NULL)) != 0) goto out;
        if (rows && strcmp(rows, "t") == 0) {
            rc = px_err_set(e, PX_ESTATE, "cannot add the shard: px_shard.%s there is not empty", fact_tables[i]);
            px_err_hint(e, "a shard is added empty; was it added to another warehouse?");
            goto out;
        }
    }

    /* here: the foreign server and user mapping, in one transaction with the record */
    if ((rc = px_db_query(c, e, "cannot install the postgres_fdw extension", NULL,
                          "CREATE EXTENSION IF NOT EXISTS postgres_fdw", 0, NULL)) != 0) {
        px_err_hint(e, "postgres_fdw ships with PostgreSQL (contrib); creating it needs a superuser");
        goto out;
    }
    if ((rc = px_db_query(c, e, "cannot add the shard: BEGIN failed", NULL, "BEGIN", 0, NULL)) != 0) goto out;
    in_tx = 1;
    if (sharded) {
        /* rows move: no load and no feature build meanwhile; in-doubt transactions
         * of earlier loads or additions resolved first, on the new server too */
        px_shards_recovery rec;
        char q[128];
        snprintf(q, sizeof q, "SELECT pg_advisory_xact_lock(%d), pg_advisory_xact_lock(%d)", PX_LOCK_ETL,
                 PX_LOCK_FEATURES);
        if ((rc = px_db_query(c, e, "cannot lock out loads and feature builds", NULL, q, 0, NULL)) != 0) goto out;
        if ((rc = px_shards_recover(c, 1, &rec, e)) != 0) goto out;
        if ((rc = resolve_prepared(c, s, "(new)", "^pxs?_[0-9]+_[0-9]+$", &rec, e)) != 0) goto out;
    }
    if ((rc = px_db_value(c, e, "cannot number the shard", &next,
                          "SELECT coalesce(max(shard_id) + 1, 0) FROM wh.shards", 0, NULL)) != 0)
        goto out;
    *shard_id = atoi(next);
    /* async_capable: the shards of one query are scanned concurrently
     * (asynchronous Append); batch_size: inserts are sent in batches */
    rc = px_buf_adds(&srv, "(");
    for (PQconninfoOption *o = opts; o->keyword && rc == 0; o++) {
        if (!o->val || !*o->val) continue;
        for (int k = 0; server_opts[k]; k++)
            if (strcmp(o->keyword, server_opts[k]) == 0) {
                rc = add_opt(c, &srv, o->keyword, o->val);
                if (rc == 0) rc = px_buf_printf(&info, "%s%s=%s", info.len ? " " : "", o->keyword, o->val);
            }
    }
    if (rc == 0) rc = add_opt(c, &srv, "async_capable", "true");
    if (rc == 0) rc = add_opt(c, &srv, "fetch_size", "10000");
    if (rc == 0) rc = add_opt(c, &srv, "batch_size", "1000");
    if (rc == 0) rc = px_buf_adds(&srv, ")");
    if (rc == 0) rc = px_buf_adds(&map, "(");
    if (rc == 0) rc = add_opt(c, &map, "user", user);
    if (rc == 0 && password) rc = add_opt(c, &map, "password", password);
    if (rc == 0) rc = px_buf_adds(&map, ")");
    if (rc == 0) rc = px_buf_printf(&info, "%suser=%s", info.len ? " " : "", user);
    if (rc == 0) rc = px_buf_addc(&info, '\0');
    sql.len = 0;
    if (rc == 0)
        rc = px_buf_printf(&sql,
                           "CREATE SERVER px_shard_%d FOREIGN DATA WRAPPER postgres_fdw OPTIONS %.*s;"
                           " CREATE USER MAPPING FOR CURRENT_USER SERVER px_shard_%d OPTIONS %.*s",
                           *shard_id, (int)srv.len, srv.data, *shard_id, (int)map.len, map.data);
    if (rc == 0) rc = px_buf_addc(&sql, '\0');
    if (rc != 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = px_db_exec(c, e, sql.data)) != 0) {
        px_err_wrap(e, PX_EDB, "cannot create the foreign server of shard %d", *shard_id);
        goto out;
    }
    if (sharded) { /* the new shard takes its share of the patients */
        PGresult *sh = NULL;
        if ((rc = px_db_query(c, e, "cannot read the shards", &sh,
                              "SELECT shard_id, server_name FROM wh.shards ORDER BY shard_id", 0, NULL)) != 0)
            goto out;
        rb.n = PQntuples(sh) + 1;
        rb.new_id = *shard_id;
        if (rb.n > 64 || !(rb.sh = calloc((size_t)rb.n, sizeof *rb.sh))) {
            PQclear(sh);
            rc = rb.n > 64 ? px_err_set(e, PX_EINVAL, "at most 64 shards") : px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        for (int k = 0; k < rb.n; k++) {
            rb.sh[k].id = k < rb.n - 1 ? atoi(PQgetvalue(sh, k, 0)) : *shard_id;
            snprintf(rb.sh[k].server, sizeof rb.sh[k].server, "%s",
                     k < rb.n - 1 ? PQgetvalue(sh, k, 1) : "");
            if (k == rb.n - 1) snprintf(rb.sh[k].server, sizeof rb.sh[k].server, "px_shard_%d", *shard_id);
        }
        PQclear(sh);
        if ((rc = rebalance_move(c, &rb, e)) != 0) goto out;
        snprintf(moved, sizeof moved, "{\"fact_encounter\": %lld, \"fact_diagnosis\": %lld, \"fact_procedure\": %lld}",
                 rb.moved[0], rb.moved[1], rb.moved[2]);
    }
    {
        char id[16], name[32];
        snprintf(id, sizeof id, "%d", *shard_id);
        snprintf(name, sizeof name, "px_shard_%d", *shard_id);
        const char *pv[] = {id, name, info.data, moved};
        /* sharded: this commit is the decision of the move (recovery: the row of
         * wh.shards exists) */
        if ((rc = px_db_audit_commit(c, e, "cannot record the shard",
                                     "WITH s AS (INSERT INTO wh.shards (shard_id, server_name, conninfo)"
                                     " VALUES ($1::int, $2, $3) RETURNING 1)"
                                     " INSERT INTO audit.events (action, object, detail) SELECT 'shards.add', $2,"
                                     " jsonb_build_object('shard_id', $1::int, 'conninfo', $3::text, 'moved', $4::jsonb)"
                                     " FROM s",
                                     4, pv, "cannot add the shard: COMMIT failed", &in_tx)) != 0)
            goto out;
    }
    if (rb.sh) {
        rebalance_end(c, &rb, 1);
        /* the planner's statistics of the new partitions */
        if ((rc = px_db_exec(c, e, "ANALYZE wh.fact_encounter, wh.fact_diagnosis, wh.fact_procedure")) != 0) goto out;
    }
    px_log(PX_LOG_INFO, "shard %d added: %s", *shard_id, info.data);
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    if (rb.sh) rebalance_end(c, &rb, 0);
    if (rc != 0) *shard_id = -1;
    if (s) PQfinish(s);
    if (opts) PQconninfoFree(opts);
    if (errmsg) PQfreemem(errmsg);
    free(next);
    free(ddl);
    free(rows);
    px_buf_release(&srv);
    px_buf_release(&map);
    px_buf_release(&info);
    px_buf_release(&sql);
    return rc;
}

int px_shards_distribute(PGconn *c, px_shards_result *r, px_err *e)
{
    PGresult *sh = NULL;
    px_buf sql = {0};
    char *v = NULL;
    int rc = 0, in_tx = 0, sharded = 0;
    memset(r, 0, sizeof *r);
    if ((rc = is_sharded(c, &sharded, e)) != 0) goto out;
    if (sharded) {
        rc = px_err_set(e, PX_ENOTHING, "the fact tables are already distributed");
        goto out;
    }
    /* a retention policy carries over (retention.c applies it on the shards), but
     * an archive still waiting in wh_retired must be written first */
    if ((rc = px_db_value(c, e, "cannot read the retention state", &v,
                          "SELECT count(*) FROM wh.retention_removed WHERE action = 'archive' AND archived_at IS NULL",
                          0, NULL)) != 0)
        goto out;
    if (v && atoi(v) > 0) {
        rc = px_err_set(e, PX_ESTATE, "cannot distribute: %s removed partition%s still wait%s to be archived", v,
                        atoi(v) == 1 ? "" : "s", atoi(v) == 1 ? "s" : "");
        px_err_detail(e, "they are tables in schema wh_retired, written to their archive files by the next apply");
        px_err_hint(e, "prognos db retention apply, then distribute");
        goto out;
    }
    if ((rc = px_db_query(c, e, "cannot read the shards", &sh,
                          "SELECT shard_id, server_name FROM wh.shards ORDER BY shard_id", 0, NULL)) != 0)
        goto out;
    int n = PQntuples(sh);
    if (n < 1) {
        rc = px_err_set(e, PX_ESTATE, "no shard to distribute to");
        px_err_hint(e, "prognos db shards add URI, once per shard");
        goto out;
    }
    if ((rc = px_db_query(c, e, "cannot distribute: BEGIN failed", NULL, "BEGIN", 0, NULL)) != 0) goto out;
    in_tx = 1;
    /* pg_partman stops managing the fact tables (it cannot manage hash partitions
     * over foreign tables): their retention is applied by retention.c on the shards */
    if ((rc = px_db_exec(c, e,
                         "DO $$ DECLARE s text; BEGIN"
                         " SELECT n.nspname INTO s FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace"
                         " WHERE x.extname = 'pg_partman';"
                         " IF s IS NOT NULL THEN EXECUTE format('DELETE FROM %I.part_config WHERE parent_table IN"
                         " (''wh.fact_encounter'', ''wh.fact_diagnosis'', ''wh.fact_procedure'')', s); END IF; END $$")) != 0) {
        px_err_wrap(e, PX_EDB, "cannot remove the fact tables from pg_partman's configuration");
        goto out;
    }
    for (int i = 0; i < N_FACT && rc == 0; i++) {
        const char *t = fact_tables[i];
        sql.len = 0;
        rc = px_buf_printf(&sql, "CREATE TABLE wh.%s_hash (LIKE wh.%s INCLUDING DEFAULTS) PARTITION BY HASH (patient_id);"
                           " ALTER TABLE wh.%s_hash ALTER COLUMN patient_id SET NOT NULL;",
                           t, t, t);
        for (int k = 0; k < n && rc == 0; k++)
            rc = px_buf_printf(&sql,
                               " CREATE FOREIGN TABLE wh.%s_s%s PARTITION OF wh.%s_hash FOR VALUES WITH (MODULUS %d,"
                               " REMAINDER %d) SERVER %s OPTIONS (schema_name 'px_shard', table_name '%s');",
                               t, PQgetvalue(sh, k, 0), t, n, k, PQgetvalue(sh, k, 1), t);
        /* the rows move through postgres_fdw, routed by the hash of the patient
         * (diagnoses and procedures carry their stay's: migration 019) */
        if (rc == 0) rc = px_buf_printf(&sql, " INSERT INTO wh.%s_hash SELECT * FROM wh.%s;", t, t);
        if (rc == 0) rc = px_buf_addc(&sql, '\0');
        if (rc != 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = px_db_exec(c, e, sql.data)) != 0) {
            px_err_wrap(e, PX_EDB, "cannot distribute wh.%s to the shards", t);
            goto out;
        }
        sql.len = 0;
        if (px_buf_printf(&sql, "SELECT count(*) FROM wh.%s_hash", t) != 0 || px_buf_addc(&sql, '\0') != 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        free(v);
        v = NULL;
        if ((rc = px_db_value(c, e, "cannot count the distributed rows", &v, sql.data, 0, NULL)) != 0) goto out;
        r->rows[i] = v ? atoll(v) : 0;
    }
    /* every diagnosis and procedure found its stay (the foreign keys the loader
     * checks): otherwise rows would be lost here */
    for (int i = 1; i < N_FACT; i++) {
        sql.len = 0;
        if (px_buf_printf(&sql, "SELECT count(*) FROM wh.%s", fact_tables[i]) != 0 || px_buf_addc(&sql, '\0') != 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        free(v);
        v = NULL;
        if ((rc = px_db_value(c, e, "cannot count the local rows", &v, sql.data, 0, NULL)) != 0) goto out;
        if (!v || atoll(v) != r->rows[i]) {
            rc = px_err_set(e, PX_ECORRUPT, "cannot distribute wh.%s: %s rows here, %lld reached the shards",
                            fact_tables[i], v ? v : "?", r->rows[i]);
            px_err_detail(e, "rows without their stay in wh.fact_encounter have no patient to hash");
            goto out;
        }
    }
    sql.len = 0;
    for (int i = N_FACT - 1; i >= 0 && rc == 0; i--)
        rc = px_buf_printf(&sql, "DROP TABLE wh.%s; ALTER TABLE wh.%s_hash RENAME TO %s;", fact_tables[i],
                           fact_tables[i], fact_tables[i]);
    if (rc == 0) rc = px_buf_addc(&sql, '\0');
    if (rc != 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = px_db_exec(c, e, sql.data)) != 0) {
        px_err_wrap(e, PX_EDB, "cannot replace the local fact tables");
        goto out;
    }
    {
        char a[32], b[32], d[32], ns[16];
        snprintf(a, sizeof a, "%lld", r->rows[0]);
        snprintf(b, sizeof b, "%lld", r->rows[1]);
        snprintf(d, sizeof d, "%lld", r->rows[2]);
        snprintf(ns, sizeof ns, "%d", n);
        const char *pv[] = {a, b, d, ns};
        /* postgres_fdw commits each shard's remote transaction as this one commits
         * (one after another: no two-phase commit in PostgreSQL 15's postgres_fdw) */
        if ((rc = px_db_audit_commit(c, e, "cannot record the distribution in audit.events",
                                     "INSERT INTO audit.events (action, object, detail) VALUES ('shards.distribute',"
                                     " 'wh', jsonb_build_object('shards', $4::int, 'fact_encounter', $1::bigint,"
                                     " 'fact_diagnosis', $2::bigint, 'fact_procedure', $3::bigint))",
                                     4, pv, "cannot distribute: COMMIT failed", &in_tx)) != 0)
            goto out;
    }
    r->shards = n;
    /* statistics of the foreign partitions, sampled through postgres_fdw, for the planner */
    if ((rc = px_db_exec(c, e, "ANALYZE wh.fact_encounter, wh.fact_diagnosis, wh.fact_procedure")) != 0) goto out;
    px_log(PX_LOG_INFO, "distributed the fact tables to %d shards: %lld stays, %lld diagnoses, %lld procedures", n,
           r->rows[0], r->rows[1], r->rows[2]);
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    PQclear(sh);
    free(v);
    px_buf_release(&sql);
    return rc;
}

/* ---- connections to a shard, and recovery of in-doubt loads --------------- */

PGconn *px_shards_connect(PGconn *c, const char *server, px_err *e)
{
    PGresult *r = NULL;
    PGconn *s = NULL;
    const char *pv[] = {server};
    /* the foreign server's libpq options and the user mapping's user and
     * password (a mapping for this user, else PUBLIC's) */
    if (px_db_query(c, e, "cannot read the shard's connection options", &r,
                    "SELECT option_name, option_value FROM pg_foreign_server s,"
                    " pg_options_to_table(s.srvoptions) WHERE s.srvname = $1"
                    " UNION ALL (SELECT o.option_name, o.option_value FROM pg_user_mappings m,"
                    " pg_options_to_table(m.umoptions) o WHERE m.srvname = $1"
                    " AND m.usename IN (current_user, 'public') AND o.option_name IN ('user', 'password')"
                    " ORDER BY m.usename = 'public')",
                    1, pv) != 0)
        return NULL;
    int n = PQntuples(r), k = 0;
    const char **kw = calloc((size_t)n + 2, sizeof *kw), **val = calloc((size_t)n + 2, sizeof *val);
    if (!kw || !val) {
        px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    int have_user = 0, have_pw = 0;
    for (int i = 0; i < n; i++) {
        const char *key = PQgetvalue(r, i, 0);
        int keep = 0;
        for (int j = 0; server_opts[j] && !keep; j++) keep = strcmp(key, server_opts[j]) == 0;
        /* the first user and password (this user's mapping sorts before PUBLIC's) */
        if (strcmp(key, "user") == 0 && !have_user) keep = have_user = 1;
        if (strcmp(key, "password") == 0 && !have_pw) keep = have_pw = 1;
        if (!keep) continue;
        kw[k] = key;
        val[k++] = PQgetvalue(r, i, 1);
    }
    kw[k] = "application_name";
    val[k++] = "prognos shard load";
    kw[k] = NULL;
    s = PQconnectdbParams(kw, val, 0);
    if (!s || PQstatus(s) != CONNECTION_OK) {
        px_err_set(e, PX_EDB, "cannot connect to shard %s", server);
        if (s) px_err_detail(e, "%s", PQerrorMessage(s));
        px_err_hint(e, "every shard must be up for a load or a recovery (prognos db shards list)");
        if (s) PQfinish(s);
        s = NULL;
    }
out:
    free(kw);
    free(val);
    PQclear(r);
    return s;
}

int px_copy_pipe(PGconn *from, const char *out_sql, PGconn *to, const char *in_sql, long long *rows, px_err *e)
{
    PGresult *r = PQexec(from, out_sql);
    int rc = 0, n;
    char *buf = NULL;
    *rows = 0;
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        rc = px_db_fail(e, from, r, "cannot read the rows to send");
        PQclear(r);
        return rc;
    }
    PQclear(r);
    r = PQexec(to, in_sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) rc = px_db_fail(e, to, r, "the receiving server refused the rows");
    PQclear(r);
    while ((n = PQgetCopyData(from, &buf, 0)) > 0) {
        if (rc == 0 && PQputCopyData(to, buf, n) != 1)
            rc = px_err_set(e, PX_EDB, "sending rows failed: %s", PQerrorMessage(to));
        PQfreemem(buf);
    }
    r = PQgetResult(from);
    if (rc == 0 && (n != -1 || PQresultStatus(r) != PGRES_COMMAND_OK)) rc = px_db_fail(e, from, r, "cannot read the rows to send");
    PQclear(r);
    while ((r = PQgetResult(from)) != NULL) PQclear(r);
    if (PQtransactionStatus(to) == PQTRANS_ACTIVE) { /* in COPY IN: end it, aborted if the source failed */
        if (PQputCopyEnd(to, rc == 0 ? NULL : "prognos: the source failed") != 1 && rc == 0)
            rc = px_err_set(e, PX_EDB, "sending rows failed: %s", PQerrorMessage(to));
        r = PQgetResult(to);
        if (rc == 0 && PQresultStatus(r) != PGRES_COMMAND_OK) rc = px_db_fail(e, to, r, "the receiving server refused the rows");
        if (rc == 0) *rows = atoll(PQcmdTuples(r));
        PQclear(r);
        while ((r = PQgetResult(to)) != NULL) PQclear(r);
    }
    return rc;
}

/* Resolves the prepared transactions of ours on shard connection s whose gid
 * matches pattern: px_<batch>_<shard> (a load) is committed when etl.batches
 * here records the batch; pxs_<new>_<shard> (a rebalance adding shard <new>)
 * when wh.shards here holds shard <new>; pxr_<run>_<shard> (a retention run,
 * retention.c) when wh.retention_runs here holds the run; else rolled back. */
static int resolve_prepared(PGconn *c, PGconn *s, const char *server, const char *pattern, px_shards_recovery *rec,
                            px_err *e)
{
    PGresult *g = NULL;
    int rc;
    const char *pv[] = {pattern};
    if ((rc = px_db_query(s, e, "cannot read the shard's prepared transactions", &g,
                          "SELECT gid, substring(gid FROM '^px[sr]?_([0-9]+)_'), substring(gid FROM '^px([sr]?)_')"
                          " FROM pg_prepared_xacts"
                          " WHERE gid ~ $1 AND database = current_database() ORDER BY prepared",
                          1, pv)) != 0)
        return rc;
    for (int i = 0; i < PQntuples(g) && rc == 0; i++) {
        const char *gid = PQgetvalue(g, i, 0), *bv[] = {PQgetvalue(g, i, 1)};
        int is_add = PQgetvalue(g, i, 2)[0] == 's', is_ret = PQgetvalue(g, i, 2)[0] == 'r';
        char *done = NULL;
        /* the coordinator's record decides: the batch, the new shard or the
         * retention run committed here or not */
        if ((rc = px_db_value(c, e, "cannot read the coordinator's records", &done,
                              is_add ? "SELECT EXISTS (SELECT 1 FROM wh.shards WHERE shard_id = $1::int)"
                              : is_ret ? "SELECT EXISTS (SELECT 1 FROM wh.retention_runs WHERE run_id = $1::bigint)"
                                        : "SELECT EXISTS (SELECT 1 FROM etl.batches WHERE batch_id = $1::bigint"
                                          " AND finished_at IS NOT NULL)",
                              1, bv)) != 0)
            break;
        int commit = done && strcmp(done, "t") == 0;
        free(done);
        char *q = PQescapeLiteral(s, gid, strlen(gid));
        if (!q) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            break;
        }
        px_buf sql = {0};
        px_buf_printf(&sql, "%s PREPARED %s", commit ? "COMMIT" : "ROLLBACK", q);
        PQfreemem(q);
        if (px_buf_failed(&sql)) rc = px_err_set(e, PX_ENOMEM, "out of memory");
        else if ((rc = px_db_exec(s, e, sql.data)) != 0)
            px_err_wrap(e, PX_EDB, "cannot resolve %s on shard %s", gid, server);
        px_buf_release(&sql);
        if (rc != 0) break;
        if (commit) rec->committed++;
        else rec->rolled_back++;
        px_log(PX_LOG_WARN, "shard %s: %s of %s %s %s (in doubt after an interrupted %s)", server, gid,
               is_add ? "the addition of shard" : is_ret ? "retention run" : "batch", bv[0],
               commit ? "committed: the coordinator recorded it" : "rolled back: it did not commit",
               is_add ? "db shards add" : is_ret ? "db retention apply" : "load");
    }
    PQclear(g);
    return rc;
}

/* Resolves the prepared transactions of ours on one registered shard. */
static int recover_shard(PGconn *c, const char *server, int shard_id, px_shards_recovery *rec, px_err *e)
{
    PGconn *s = px_shards_connect(c, server, e);
    if (!s) return e->code ? e->code : PX_EDB;
    char pat[64];
    snprintf(pat, sizeof pat, "^px[sr]?_[0-9]+_%d$", shard_id);
    int rc = resolve_prepared(c, s, server, pat, rec, e);
    PQfinish(s);
    return rc;
}

int px_shards_recover(PGconn *c, int locked, px_shards_recovery *rec, px_err *e)
{
    PGresult *sh = NULL;
    char *v = NULL;
    int rc = 0, in_tx = 0;
    memset(rec, 0, sizeof *rec);
    /* prepared transactions of ours exist only on the shards of a distributed
     * warehouse (a single node with shards registered needs none of them up) */
    if ((rc = px_db_value(c, e, "cannot read the schema", &v,
                          "SELECT to_regclass('wh.shards') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_partitioned_table"
                          " WHERE partrelid = to_regclass('wh.fact_encounter') AND partstrat = 'h')",
                          0, NULL)) != 0)
        return rc;
    int have = v && strcmp(v, "t") == 0;
    free(v);
    v = NULL;
    if (!have) return 0;
    if (locked <= 0) {
        /* a load holds this lock from before its PREPAREs to after its commit here:
         * its prepared transactions are never taken for a killed load's */
        char q[96];
        if ((rc = px_db_exec(c, e, "BEGIN")) != 0) return rc;
        in_tx = 1;
        snprintf(q, sizeof q, "SELECT pg_%sadvisory_xact_lock(%d)", locked < 0 ? "try_" : "", PX_LOCK_ETL);
        free(v);
        v = NULL;
        if ((rc = px_db_value(c, e, "cannot take the ETL lock", &v, q, 0, NULL)) != 0) goto out;
        if (locked < 0 && !(v && strcmp(v, "t") == 0)) { /* a load runs: it resolves them itself */
            rec->shards = -1;
            goto out;
        }
    }
    if ((rc = px_db_query(c, e, "cannot read the shards", &sh,
                          "SELECT shard_id, server_name FROM wh.shards ORDER BY shard_id", 0, NULL)) != 0)
        goto out;
    for (int i = 0; i < PQntuples(sh) && rc == 0; i++)
        rc = recover_shard(c, PQgetvalue(sh, i, 1), atoi(PQgetvalue(sh, i, 0)), rec, e);
    rec->shards = PQntuples(sh);
out:
    if (in_tx) px_db_exec(c, NULL, rc == 0 ? "COMMIT" : "ROLLBACK");
    PQclear(sh);
    free(v);
    return rc;
}

/* ---- where the work runs ----------------------------------------------------- */

int px_shards_tune(PGconn *c, px_err *e)
{
    char *v = NULL;
    int rc = px_db_value(c, e, "cannot read the fact tables' partitioning", &v,
                         "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table"
                         " WHERE partrelid = 'wh.fact_encounter'::regclass AND partstrat = 'h')",
                         0, NULL);
    int sharded = v && strcmp(v, "t") == 0;
    free(v);
    if (rc != 0 || !sharded) return rc;
    /* an aggregate grouped by the patient (the hash key) then runs on each shard
     * whole (postgres_fdw's aggregate pushdown), a join on it shard by shard;
     * prognos.sharded tells the feature SQL (features/sql/base.sql) to keep its
     * fact-only statements off local joins, so that they run on the shards */
    return px_db_exec(c, e, "SET LOCAL enable_partitionwise_aggregate = on; SET LOCAL enable_partitionwise_join = on;"
                            " SET LOCAL prognos.sharded = on");
}

int px_shards_union(PGconn *c, const char *table, const char *branch, px_buf *out, px_err *e)
{
    int known = 0;
    for (int i = 0; i < N_FACT; i++) known |= strcmp(table, fact_tables[i]) == 0;
    if (!known) return px_err_set(e, PX_EINVAL, "'%s' is not a fact table", table);
    char reg[64];
    snprintf(reg, sizeof reg, "wh.%s", table);
    const char *pv[] = {reg};
    PGresult *r = NULL;
    /* the foreign partitions of a hash-partitioned (distributed) table, else the table */
    int rc = px_db_query(c, e, "cannot read the fact table's partitions", &r,
                         "SELECT format('%I.%I', n.nspname, p.relname) FROM pg_inherits i"
                         " JOIN pg_class p ON p.oid = i.inhrelid JOIN pg_namespace n ON n.oid = p.relnamespace"
                         " JOIN pg_partitioned_table t ON t.partrelid = i.inhparent AND t.partstrat = 'h'"
                         " WHERE i.inhparent = to_regclass($1) AND p.relkind = 'f'"
                         " UNION ALL SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM pg_partitioned_table"
                         " WHERE partrelid = to_regclass($1) AND partstrat = 'h')"
                         " ORDER BY 1",
                         1, pv);
    if (rc != 0) return rc;
    if (PQntuples(r) == 0) rc = px_err_set(e, PX_ESTATE, "wh.%s is distributed but has no shard", table);
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        const char *rel = PQgetvalue(r, i, 0), *p = branch, *at;
        if (i) px_buf_adds(out, " UNION ALL ");
        px_buf_addc(out, '(');
        while ((at = strstr(p, "@REL@")) != NULL) {
            px_buf_add(out, p, (size_t)(at - p));
            px_buf_adds(out, rel);
            p = at + 5;
        }
        px_buf_adds(out, p);
        px_buf_addc(out, ')');
    }
    PQclear(r);
    if (rc == 0 && px_buf_failed(out)) rc = px_err_set(e, PX_ENOMEM, "out of memory");
    return rc;
}
