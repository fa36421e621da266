/* retention.c: retention of the fact tables' yearly partitions. The policy is a
 * row of wh.retention_policy and of pg_partman's part_config; pg_partman's
 * drop_partition_time() applies it (wh.retention_run records and audits each
 * partition removed); an archived partition is written as gzip'd CSV, its SHA-256
 * recorded in the transaction that drops it. The checks refuse periods that
 * retention removed. Tables and the reasons for the design: engine/sql/016_retention.sql.
 * On a distributed warehouse (pg_partman cannot manage hash partitions over
 * foreign tables) apply_sharded applies pg_partman's rule on the shards with
 * two-phase commit: engine/sql/020_shard_retention.sql, README "Retention". */
#include "engine/internal.h"
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* serialises retention runs (distinct from the migration, ETL and feature locks) */
#define PX_RETENTION_LOCK "7070030"

static const char *const fact_tables[] = {"fact_encounter", "fact_diagnosis", "fact_procedure"};
#define N_FACT 3

int px_retention_parse_age(const char *s, char *out, size_t outlen, px_err *e)
{
    char *end;
    if (!s || *s < '0' || *s > '9') goto bad;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || n < 1 || strlen(end) != 1) goto bad;
    const char *unit = *end == 'y' ? "years" : *end == 'm' ? "months" : *end == 'd' ? "days" : NULL;
    long max = *end == 'y' ? 200 : *end == 'm' ? 2400 : 73000;
    if (!unit || n > max) goto bad;
    snprintf(out, outlen, "%ld %s", n, unit);
    return 0;
bad:
    px_err_set(e, PX_EINVAL, "'%s' is not an age", s ? s : "");
    px_err_hint(e, "use a number and y, m or d: 7y, 18m, 400d (at least one day, at most 200 years)");
    return PX_EINVAL;
}

/* The schema pg_partman is installed in, malloc'd into *schema (caller frees).
 * When it is not installed and create is set, installs it into schema partman. */
static int partman_schema(PGconn *c, int create, char **schema, px_err *e)
{
    static const char q[] = "SELECT n.nspname FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace"
                            " WHERE x.extname = 'pg_partman'";
    int rc = px_db_value(c, e, "cannot look for the pg_partman extension", schema, q, 0, NULL);
    if (rc != 0 || *schema) return rc;
    if (!create) {
        px_err_set(e, PX_ESTATE, "pg_partman is not installed in the warehouse");
        px_err_hint(e, "prognos db retention set installs it");
        return PX_ESTATE;
    }
    if (px_db_query(c, e, "cannot install the pg_partman extension", NULL,
                    "CREATE SCHEMA IF NOT EXISTS partman", 0, NULL) != 0 ||
        px_db_query(c, e, "cannot install the pg_partman extension", NULL,
                    "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman", 0, NULL) != 0) {
        px_err_hint(e, "install the Debian package postgresql-15-partman (scripts/setup.sh does); on an external "
                       "server a superuser runs: CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman;");
        return PX_EDB;
    }
    return px_db_value(c, e, "cannot look for the pg_partman extension", schema, q, 0, NULL);
}

/* *dist: the fact tables are distributed over shards (migration 018's test). */
static int distributed(PGconn *c, int *dist, px_err *e)
{
    char *v = NULL;
    int rc = px_db_value(c, e, "cannot read the fact tables' partitioning", &v,
                         "SELECT wh.is_distributed('fact_encounter')", 0, NULL);
    *dist = v && strcmp(v, "t") == 0;
    free(v);
    return rc;
}

int px_retention_set(PGconn *c, const char *table, const char *older_than, const char *action, px_err *e)
{
    char age[64];
    int rc, in_tx = 0, all = table && strcmp(table, "all") == 0, known = all, dist = 0;
    char *schema = NULL, *qs = NULL;
    for (int i = 0; i < N_FACT && !known; i++) known = table && strcmp(table, fact_tables[i]) == 0;
    if (!known) {
        px_err_set(e, PX_EINVAL, "'%s' is not a fact table", table ? table : "");
        px_err_hint(e, "use fact_encounter, fact_diagnosis, fact_procedure or all");
        return PX_EINVAL;
    }
    if ((rc = px_retention_parse_age(older_than, age, sizeof age, e)) != 0) return rc;
    if (!action || (strcmp(action, "detach") != 0 && strcmp(action, "drop") != 0 && strcmp(action, "archive") != 0)) {
        px_err_set(e, PX_EINVAL, "'%s' is not a retention action", action ? action : "");
        px_err_hint(e, "use detach, drop or archive");
        return PX_EINVAL;
    }
    if ((rc = distributed(c, &dist, e)) != 0) goto out;
    /* a distributed warehouse's fact tables are hash partitions over foreign
     * tables, which pg_partman cannot manage: the policy alone is kept, applied
     * by apply_sharded with pg_partman's retention rule */
    if (!dist && (rc = partman_schema(c, 1, &schema, e)) != 0) goto out;
    if (!dist && !(qs = PQescapeIdentifier(c, schema, strlen(schema)))) {
        rc = px_db_fail(e, c, NULL, "cannot quote the pg_partman schema");
        goto out;
    }
    if ((rc = px_db_query(c, e, "cannot set the retention policy: BEGIN failed", NULL, "BEGIN", 0, NULL)) != 0) goto out;
    in_tx = 1;
    for (int i = 0; i < N_FACT; i++) {
        if (!all && strcmp(table, fact_tables[i]) != 0) continue;
        char parent[64], sql[2048];
        snprintf(parent, sizeof parent, "wh.%s", fact_tables[i]);
        const char *pv[] = {fact_tables[i], age, action, parent};
        if ((rc = px_db_query(c, e, "cannot set the retention policy", NULL,
                              "INSERT INTO wh.retention_policy (table_name, older_than, action) VALUES ($1, $2::interval, $3)"
                              " ON CONFLICT (table_name) DO UPDATE SET older_than = EXCLUDED.older_than,"
                              " action = EXCLUDED.action, set_at = now(), set_by = session_user",
                              3, pv)) != 0)
            goto out;
        /* pg_partman's configuration of the partition set: yearly native range
         * partitions of admission_date, created by the loader (maintenance off, so
         * pg_partman pre-creates nothing), the retention and what becomes of an
         * expired partition: kept as a table (detach), moved to wh_retired for the
         * archive, or dropped */
        sql[0] = '\0';
        if (!dist)
            snprintf(sql, sizeof sql,
                 "INSERT INTO %s.part_config (parent_table, control, partition_type, partition_interval, premake,"
                 " datetime_string, automatic_maintenance, jobmon, retention, retention_keep_table,"
                 " retention_keep_index, retention_schema)"
                 " VALUES ($3, 'admission_date', 'native', '1 year', 1, 'YYYY', 'off', false, $1,"
                 " $2 = 'detach', true, CASE WHEN $2 = 'archive' THEN 'wh_retired' END)"
                 " ON CONFLICT (parent_table) DO UPDATE SET retention = EXCLUDED.retention,"
                 " retention_keep_table = EXCLUDED.retention_keep_table, retention_schema = EXCLUDED.retention_schema,"
                 " automatic_maintenance = 'off'",
                 qs);
        const char *pp[] = {age, action, parent};
        if (!dist && (rc = px_db_query(c, e, "cannot configure pg_partman's retention", NULL, sql, 3, pp)) != 0)
            goto out;
        if ((rc = px_db_audit_commit(c, e, "cannot record the retention policy in audit.events",
                                     "INSERT INTO audit.events (action, object, detail) VALUES ('retention.set', $3,"
                                     " jsonb_build_object('older_than', $1::text, 'action', $2::text))",
                                     3, pp, "cannot set the retention policy: COMMIT failed", &in_tx)) != 0)
            goto out;
    }
    px_log(PX_LOG_INFO, "retention: %s older than %s: %s", table, age, action);
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    if (qs) PQfreemem(qs);
    free(schema);
    return rc;
}

/* ---- archive -------------------------------------------------------------- */

typedef struct gz_sink {
    int fd;
    z_stream z;
    EVP_MD_CTX *md;
    long long bytes;
    unsigned char out[1 << 16];
} gz_sink;

/* Compresses in (flush: Z_FINISH at the end) and writes what comes out to the
 * file, hashing the compressed bytes as they are written. */
static int gz_put(gz_sink *g, const void *in, size_t len, int flush, const char *path, px_err *e)
{
    g->z.next_in = (Bytef *)(uintptr_t)in;
    g->z.avail_in = (uInt)len;
    int zr;
    do {
        g->z.next_out = g->out;
        g->z.avail_out = sizeof g->out;
        zr = deflate(&g->z, flush);
        if (zr == Z_STREAM_ERROR) return px_err_set(e, PX_EIO, "cannot compress the archive '%s'", path);
        size_t have = sizeof g->out - g->z.avail_out;
        for (size_t off = 0; off < have;) {
            ssize_t w = write(g->fd, g->out + off, have - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) return px_err_set(e, PX_EIO, "cannot write the archive '%s': %s", path, strerror(errno));
            off += (size_t)w;
        }
        if (have && EVP_DigestUpdate(g->md, g->out, have) != 1)
            return px_err_set(e, PX_EIO, "cannot hash the archive '%s'", path);
        g->bytes += (long long)have;
    } while (g->z.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
    return 0;
}

/* Compresses the output of one COPY ... TO STDOUT on c into g. */
static int gz_copy(gz_sink *g, PGconn *c, const char *sql, const char *path, px_err *e)
{
    int rc = 0;
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        rc = px_db_fail(e, c, r, "cannot read a partition to archive");
        PQclear(r);
        return rc;
    }
    PQclear(r);
    for (;;) {
        char *buf = NULL;
        int n = PQgetCopyData(c, &buf, 0);
        if (n == -1) break;
        if (n < 0) {
            rc = px_db_fail(e, c, NULL, "cannot read a partition to archive");
            break;
        }
        rc = gz_put(g, buf, (size_t)n, Z_NO_FLUSH, path, e);
        PQfreemem(buf);
        if (rc != 0) { /* drain the COPY so the connection stays usable */
            while (PQgetCopyData(c, &buf, 0) > 0) PQfreemem(buf);
            break;
        }
    }
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == 0) rc = px_db_fail(e, c, r, "cannot read a partition to archive");
        PQclear(r);
    }
    return rc;
}

/* Writes the output of n COPY ... TO STDOUT (FORMAT csv) statements, sqls[i] on
 * cs[i] in its open transaction, one after the other as one gzip'd file to path
 * (the first statement writes the header line); fills sha (hex) and *bytes. The
 * file is complete and fsync'd, renamed into place from path.tmp, when this
 * returns 0. */
static int write_archive_from(int n, PGconn *const *cs, const char *const *sqls, const char *path, char sha[65],
                              long long *bytes, px_err *e)
{
    char tmp[4300];
    gz_sink *g = calloc(1, sizeof *g);
    int rc = 0, zinit = 0;
    if (!g) return px_err_set(e, PX_ENOMEM, "out of memory");
    g->fd = -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!(g->md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(g->md, EVP_sha256(), NULL) != 1) {
        rc = px_err_set(e, PX_ENOMEM, "cannot start a SHA-256");
        goto out;
    }
    if (deflateInit2(&g->z, 6, Z_DEFLATED, 15 + 16 /* gzip header */, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        rc = px_err_set(e, PX_ENOMEM, "cannot start the compressor");
        goto out;
    }
    zinit = 1;
    if ((g->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        rc = px_err_set(e, PX_EIO, "cannot create the archive '%s': %s", tmp, strerror(errno));
        goto out;
    }
    for (int i = 0; i < n; i++)
        if ((rc = gz_copy(g, cs[i], sqls[i], path, e)) != 0) goto out;
    if ((rc = gz_put(g, NULL, 0, Z_FINISH, path, e)) != 0) goto out;
    if (fsync(g->fd) != 0 || close(g->fd) != 0) {
        g->fd = -1;
        rc = px_err_set(e, PX_EIO, "cannot write the archive '%s': %s", tmp, strerror(errno));
        goto out;
    }
    g->fd = -1;
    if (rename(tmp, path) != 0) {
        rc = px_err_set(e, PX_EIO, "cannot rename the archive to '%s': %s", path, strerror(errno));
        goto out;
    }
    {   /* the rename itself must survive a crash before the drop commits */
        char dir[4200];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = '\0';
        int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0) {
            rc = px_err_set(e, PX_EIO, "cannot sync the archive directory of '%s': %s", path, strerror(errno));
            if (dfd >= 0) close(dfd);
            goto out;
        }
        close(dfd);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_DigestFinal_ex(g->md, md, &mdlen) != 1 || mdlen != 32) {
        rc = px_err_set(e, PX_EIO, "cannot finish the SHA-256 of '%s'", path);
        goto out;
    }
    for (unsigned i = 0; i < 32; i++) snprintf(sha + 2 * i, 3, "%02x", md[i]);
    *bytes = g->bytes;
out:
    if (g->fd >= 0) close(g->fd);
    if (rc != 0) unlink(tmp);
    if (zinit) deflateEnd(&g->z);
    EVP_MD_CTX_free(g->md);
    free(g);
    return rc;
}

/* Writes wh_retired.<part> as gzip'd CSV (with a header line) to path, in c's
 * open transaction (write_archive_from). */
static int write_archive(PGconn *c, const char *part, const char *path, char sha[65], long long *bytes, px_err *e)
{
    char sql[512];
    char *qp = PQescapeIdentifier(c, part, strlen(part));
    if (!qp) return px_db_fail(e, c, NULL, "cannot quote a partition name");
    snprintf(sql, sizeof sql, "COPY wh_retired.%s TO STDOUT WITH (FORMAT csv, HEADER)", qp);
    PQfreemem(qp);
    const char *sqls[] = {sql};
    return write_archive_from(1, &c, sqls, path, sha, bytes, e);
}

/* Archives one partition waiting in wh_retired: its file, then in one
 * transaction the SHA-256 recorded, the table dropped and the audit event. */
static int archive_one(PGconn *c, const char *dir, const char *table, const char *part, px_retention_item *it,
                       px_err *e)
{
    char path[4200], sha[65], bytes_s[32], *rows = NULL;
    long long bytes = 0;
    int rc, in_tx = 0;
    snprintf(path, sizeof path, "%s/%s.csv.gz", dir, part);
    if ((rc = px_db_query(c, e, "cannot archive a partition: BEGIN failed", NULL,
                          "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL)) != 0)
        return rc;
    in_tx = 1;
    {
        char sql[256];
        char *qp = PQescapeIdentifier(c, part, strlen(part));
        if (!qp) { rc = px_db_fail(e, c, NULL, "cannot quote a partition name"); goto out; }
        snprintf(sql, sizeof sql, "SELECT count(*) FROM wh_retired.%s", qp);
        PQfreemem(qp);
        if ((rc = px_db_value(c, e, "cannot count the rows of a partition to archive", &rows, sql, 0, NULL)) != 0)
            goto out;
    }
    if ((rc = write_archive(c, part, path, sha, &bytes, e)) != 0) goto out;
    snprintf(bytes_s, sizeof bytes_s, "%lld", bytes);
    {
        const char *pv[] = {table, part, path, sha, bytes_s, rows};
        char sql[512];
        char *qp = PQescapeIdentifier(c, part, strlen(part));
        if (!qp) { rc = px_db_fail(e, c, NULL, "cannot quote a partition name"); goto out; }
        if ((rc = px_db_query(c, e, "cannot record an archive", NULL,
                              "UPDATE wh.retention_removed SET archive_file = $3, archive_sha256 = $4,"
                              " archive_bytes = $5::bigint, archive_rows = $6::bigint, archived_at = now()"
                              " WHERE table_name = $1 AND partition_name = $2",
                              6, pv)) != 0 ||
            (rc = px_db_query(c, e, "cannot record an archive in audit.events", NULL,
                              "INSERT INTO audit.events (action, object, detail) VALUES ('retention.archive',"
                              " 'wh.' || $2::text, jsonb_build_object('table', 'wh.' || $1::text, 'file', $3::text, 'sha256', $4::text,"
                              " 'bytes', $5::bigint, 'rows', $6::bigint))",
                              6, pv)) != 0) {
            PQfreemem(qp);
            goto out;
        }
        snprintf(sql, sizeof sql, "DROP TABLE wh_retired.%s", qp);
        PQfreemem(qp);
        if ((rc = px_db_query(c, e, "cannot drop an archived partition", NULL, sql, 0, NULL)) != 0) goto out;
    }
    if ((rc = px_db_query(c, e, "cannot archive a partition: COMMIT failed", NULL, "COMMIT", 0, NULL)) != 0) goto out;
    in_tx = 0;
    snprintf(it->archive_file, sizeof it->archive_file, "%s", path);
    snprintf(it->archive_sha256, sizeof it->archive_sha256, "%s", sha);
    it->archive_rows = atoll(rows);
    it->archive_bytes = bytes;
    px_log(PX_LOG_INFO, "retention: archived wh.%s (%s rows) to %s, sha256 %s", part, rows, path, sha);
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    free(rows);
    return rc;
}

/* ---- apply ---------------------------------------------------------------- */

static int add_item(px_retention_result *r, const char *table, const char *part, const char *lo, const char *hi,
                    const char *action, px_err *e)
{
    px_retention_item *n = realloc(r->items, (size_t)(r->n + 1) * sizeof *n);
    if (!n) return px_err_set(e, PX_ENOMEM, "out of memory");
    r->items = n;
    px_retention_item *it = &r->items[r->n++];
    memset(it, 0, sizeof *it);
    snprintf(it->table, sizeof it->table, "%s", table);
    snprintf(it->partition, sizeof it->partition, "%s", part);
    snprintf(it->period_start, sizeof it->period_start, "%s", lo);
    snprintf(it->period_end, sizeof it->period_end, "%s", hi);
    snprintf(it->action, sizeof it->action, "%s", action);
    return 0;
}

void px_retention_result_release(px_retention_result *r)
{
    if (!r) return;
    free(r->items);
    memset(r, 0, sizeof *r);
}

/* ---- apply on a distributed warehouse -------------------------------------- */

typedef struct ret_shard {
    int id;
    char server[64];
    PGconn *s;
    int prepared;
} ret_shard;

/* Runs a statement on a shard in its open transaction; *rows: the rows it
 * affected (DELETE, CREATE TABLE AS) or the first value of its first row. */
static int shard_run(ret_shard *sh, const char *sql, long long *rows, const char *what, px_err *e)
{
    PGresult *r = PQexec(sh->s, sql);
    int rc = 0;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK) {
        if (rows) *rows = atoll(PQcmdTuples(r));
    } else if (st == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1) {
        if (rows) *rows = atoll(PQgetvalue(r, 0, 0));
    } else {
        rc = px_db_fail(e, sh->s, r, what);
        px_err_wrap(e, PX_EDB, "shard %s", sh->server);
    }
    PQclear(r);
    return rc;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* pg_partman's retention rule applied to a distributed warehouse, whose fact
 * tables pg_partman cannot manage (hash partitions over postgres_fdw foreign
 * tables; a year's rows are spread over every shard): for each policy, every
 * year whose whole period ended more than older_than before now and that some
 * shard holds rows of is removed from every shard in one transaction per shard
 * (archive: the rows of all shards written first to one gzip'd CSV, its SHA-256
 * recorded; detach: moved to px_shard.<table>_p<year> on each shard; then
 * deleted). The shards' transactions are PREPAREd ('pxr_<run>_<shard>'); the
 * coordinator's commit of wh.retention_removed, the audit events and the run's
 * row of wh.retention_runs is the decision; then COMMIT PREPARED on every shard.
 * A run killed in between is resolved by px_shards_recover (migration 020). */
static int apply_sharded(PGconn *c, const char *dir, px_retention_result *r, px_err *e)
{
    PGresult *pol = NULL, *sh = NULL, *res = NULL;
    ret_shard *S = NULL;
    PGconn **conns = NULL;
    char **sqls = NULL;
    int *years = NULL;
    int n = 0, rc, in_tx = 0, decided = 0, made_dir = 0;
    char run[32] = "", q[512], ns[16];
    px_buf sql = {0};
    px_shards_recovery rec;

    if ((rc = px_db_exec(c, e, "BEGIN")) != 0) return rc;
    in_tx = 1;
    /* the ETL lock until the decision commits: no load writes the shards
     * meanwhile, and a recovery elsewhere waits rather than taking this run's
     * prepared transactions for a killed run's; in-doubt ones are resolved first */
    snprintf(q, sizeof q, "SELECT pg_advisory_xact_lock(%d)", PX_LOCK_ETL);
    if ((rc = px_db_query(c, e, "cannot take the ETL lock", NULL, q, 0, NULL)) != 0) goto out;
    if ((rc = px_shards_recover(c, 1, &rec, e)) != 0) goto out;
    /* per policy, the first day of the year after the last expired one: a year
     * goes when its end (the next 1 January) is before now - older_than */
    if ((rc = px_db_query(c, e, "cannot read the retention policies", &pol,
                          "SELECT p.table_name, p.action, p.older_than::text,"
                          " (CASE WHEN x.t > date_trunc('year', x.t) THEN date_trunc('year', x.t)"
                          " ELSE date_trunc('year', x.t) - interval '1 year' END)::date"
                          " FROM wh.retention_policy p, LATERAL (SELECT now() - p.older_than AS t) x"
                          " ORDER BY p.table_name",
                          0, NULL)) != 0)
        goto out;
    if ((rc = px_db_query(c, e, "cannot read the shards", &sh,
                          "SELECT shard_id, server_name FROM wh.shards ORDER BY shard_id", 0, NULL)) != 0)
        goto out;
    n = PQntuples(sh);
    if (n < 1) {
        rc = px_err_set(e, PX_ESTATE, "the warehouse is distributed but has no shard");
        goto out;
    }
    S = calloc((size_t)n, sizeof *S);
    conns = calloc((size_t)n, sizeof *conns);
    sqls = calloc((size_t)n, sizeof *sqls);
    if (!S || !conns || !sqls) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < n; k++) {
        S[k].id = atoi(PQgetvalue(sh, k, 0));
        snprintf(S[k].server, sizeof S[k].server, "%s", PQgetvalue(sh, k, 1));
        if (!(S[k].s = px_shards_connect(c, S[k].server, e))) {
            rc = e->code ? e->code : PX_EDB;
            goto out;
        }
        conns[k] = S[k].s;
        /* one snapshot per shard: what is archived or moved is what is deleted */
        if ((rc = shard_run(&S[k], "BEGIN ISOLATION LEVEL REPEATABLE READ", NULL, "cannot start the removal", e)) != 0)
            goto out;
    }
    if ((rc = px_db_scalar(c, e, run, sizeof run, "SELECT nextval('wh.retention_run_seq')")) != 0) goto out;
    snprintf(ns, sizeof ns, "%d", n);
    for (int i = 0; i < PQntuples(pol); i++) {
        const char *tab = PQgetvalue(pol, i, 0), *action = PQgetvalue(pol, i, 1), *older = PQgetvalue(pol, i, 2);
        const char *bound[] = {PQgetvalue(pol, i, 3)};
        int known = 0, ny = 0;
        for (int t = 0; t < N_FACT; t++) known |= strcmp(tab, fact_tables[t]) == 0;
        if (!known) { /* the table names are interpolated below: only ours */
            rc = px_err_set(e, PX_ECORRUPT, "wh.retention_policy names '%s', not a fact table", tab);
            goto out;
        }
        /* the expired years any shard holds rows of */
        snprintf(q, sizeof q, "SELECT DISTINCT extract(year FROM admission_date)::int FROM px_shard.%s"
                 " WHERE admission_date < $1::date", tab);
        for (int k = 0; k < n; k++) {
            if ((rc = px_db_query(S[k].s, e, "cannot read the years a shard holds", &res, q, 1, bound)) != 0) {
                px_err_wrap(e, PX_EDB, "shard %s", S[k].server);
                goto out;
            }
            int *ny2 = realloc(years, (size_t)(ny + PQntuples(res) + 1) * sizeof *years);
            if (!ny2) {
                rc = px_err_set(e, PX_ENOMEM, "out of memory");
                goto out;
            }
            years = ny2;
            for (int j = 0; j < PQntuples(res); j++) {
                int y = atoi(PQgetvalue(res, j, 0)), seen = 0;
                for (int m = 0; m < ny && !seen; m++) seen = years[m] == y;
                if (!seen) years[ny++] = y;
            }
            PQclear(res);
            res = NULL;
        }
        if (ny > 1) qsort(years, (size_t)ny, sizeof *years, cmp_int);
        for (int j = 0; j < ny; j++) {
            char part[64], lo[24], hi[24], where[112], path[4200] = "", sha[65] = "", bytes_s[32] = "", rows_s[32];
            long long held = 0, kept = 0, deleted = 0, bytes = 0;
            int archive = strcmp(action, "archive") == 0, detach = strcmp(action, "detach") == 0;
            snprintf(part, sizeof part, "%s_p%d", tab, years[j]);
            snprintf(lo, sizeof lo, "%04d-01-01", years[j]);
            snprintf(hi, sizeof hi, "%04d-01-01", years[j] + 1);
            snprintf(where, sizeof where, "admission_date >= '%s' AND admission_date < '%s'", lo, hi);
            for (int k = 0; k < n; k++) {
                long long v = 0;
                snprintf(q, sizeof q, "SELECT count(*) FROM px_shard.%s WHERE %s", tab, where);
                if ((rc = shard_run(&S[k], q, &v, "cannot count the rows to remove", e)) != 0) goto out;
                held += v;
            }
            if (archive) {
                if (!made_dir && (rc = px_mkdir_p(dir, 0700, e)) != 0) goto out;
                made_dir = 1;
                snprintf(path, sizeof path, "%s/%s.csv.gz", dir, part);
                for (int k = 0; k < n; k++) {
                    px_buf_reset(&sql);
                    px_buf_printf(&sql, "COPY (SELECT * FROM px_shard.%s WHERE %s) TO STDOUT WITH (FORMAT csv%s)", tab,
                                  where, k == 0 ? ", HEADER" : "");
                    if (px_buf_failed(&sql) || !(sqls[k] = strdup(sql.data))) {
                        rc = px_err_set(e, PX_ENOMEM, "out of memory");
                        goto out;
                    }
                }
                /* written, fsync'd and hashed before any shard's delete is prepared */
                rc = write_archive_from(n, conns, (const char *const *)sqls, path, sha, &bytes, e);
                for (int k = 0; k < n; k++) {
                    free(sqls[k]);
                    sqls[k] = NULL;
                }
                if (rc != 0) goto out;
                snprintf(bytes_s, sizeof bytes_s, "%lld", bytes);
                kept = held;
            }
            for (int k = 0; k < n; k++) {
                long long v = 0;
                if (detach) { /* the shard's rows of the year, a table of their own there */
                    px_buf_reset(&sql);
                    px_buf_printf(&sql, "CREATE TABLE px_shard.%s AS SELECT * FROM px_shard.%s WHERE %s", part, tab,
                                  where);
                    if (px_buf_failed(&sql)) {
                        rc = px_err_set(e, PX_ENOMEM, "out of memory");
                        goto out;
                    }
                    if ((rc = shard_run(&S[k], sql.data, &v, "cannot detach a year's rows", e)) != 0) goto out;
                    kept += v;
                }
                snprintf(q, sizeof q, "DELETE FROM px_shard.%s WHERE %s", tab, where);
                if ((rc = shard_run(&S[k], q, &v, "cannot remove a year's rows", e)) != 0) goto out;
                deleted += v;
            }
            if (deleted != held || (strcmp(action, "drop") != 0 && kept != held)) {
                rc = px_err_set(e, PX_ECORRUPT, "wh.%s %d: %lld rows on the shards, %lld kept (%s), %lld deleted", tab,
                                years[j], held, kept, action, deleted);
                goto out;
            }
            snprintf(rows_s, sizeof rows_s, "%lld", held);
            if ((rc = add_item(r, tab, part, lo, hi, action, e)) != 0) goto out;
            px_retention_item *it = &r->items[r->n - 1];
            if (archive) {
                snprintf(it->archive_file, sizeof it->archive_file, "%s", path);
                snprintf(it->archive_sha256, sizeof it->archive_sha256, "%s", sha);
                it->archive_rows = held;
                it->archive_bytes = bytes;
            }
            const char *pv[] = {tab, part, lo, hi, action, older, archive ? path : NULL, archive ? sha : NULL,
                                archive ? bytes_s : NULL, rows_s, ns};
            if ((rc = px_db_query(c, e, "cannot record a removed year", NULL,
                                  "WITH ins AS (INSERT INTO wh.retention_removed (table_name, partition_name, period_start,"
                                  " period_end, action, archive_file, archive_sha256, archive_bytes, archive_rows,"
                                  " archived_at) VALUES ($1, $2, $3::date, $4::date, $5, $7, $8, $9::bigint,"
                                  " CASE WHEN $5 = 'archive' THEN $10::bigint END, CASE WHEN $5 = 'archive' THEN now() END)"
                                  " RETURNING 1)"
                                  " INSERT INTO audit.events (action, object, detail) SELECT 'retention.remove', 'wh.' || $2,"
                                  " jsonb_build_object('table', 'wh.' || $1, 'period_start', $3::date, 'period_end', $4::date,"
                                  " 'action', $5::text, 'older_than', $6::text, 'rows', $10::bigint, 'shards', $11::int,"
                                  " 'detached_to', CASE WHEN $5 = 'detach' THEN 'px_shard.' || $2 || ' on each shard' END,"
                                  " 'by', 'prognos: pg_partman''s retention rule on the shards') FROM ins",
                                  11, pv)) != 0)
                goto out;
            const char *av[] = {tab, part, path, sha, bytes_s, rows_s};
            if (archive && (rc = px_db_query(c, e, "cannot record an archive in audit.events", NULL,
                                             "INSERT INTO audit.events (action, object, detail) VALUES ('retention.archive',"
                                             " 'wh.' || $2::text, jsonb_build_object('table', 'wh.' || $1::text, 'file',"
                                             " $3::text, 'sha256', $4::text, 'bytes', $5::bigint, 'rows', $6::bigint))",
                                             6, av)) != 0)
                goto out;
            if (archive) r->archived++;
            px_log(PX_LOG_INFO, "retention: wh.%s %d (%lld rows on %d shards) %s%s", tab, years[j], held, n,
                   archive ? "archived to " : detach ? "detached" : "dropped", archive ? path : "");
        }
    }
    if (r->n == 0) goto out; /* nothing expired: the shards' transactions end unprepared */
    px_test_kill_point("retention_ship");
    for (int k = 0; k < n; k++) {
        snprintf(q, sizeof q, "PREPARE TRANSACTION 'pxr_%s_%d'", run, S[k].id);
        if ((rc = shard_run(&S[k], q, NULL, "cannot prepare the removal", e)) != 0) {
            px_err_hint(e, "a shard needs max_prepared_transactions > 0");
            goto out;
        }
        S[k].prepared = 1;
        if (k == 0) px_test_kill_point("retention_prepared");
    }
    {
        char nr[16];
        snprintf(nr, sizeof nr, "%d", r->n);
        const char *pv[] = {run, ns, nr};
        if ((rc = px_db_query(c, e, "cannot record the retention run", NULL,
                              "INSERT INTO wh.retention_runs (run_id, shards, removed) VALUES ($1::bigint, $2::int, $3::int)",
                              3, pv)) != 0)
            goto out;
    }
    /* the decision */
    if ((rc = px_db_query(c, e, "cannot apply retention: COMMIT failed", NULL, "COMMIT", 0, NULL)) != 0) goto out;
    in_tx = 0;
    decided = 1;
    r->removed = r->n;
    px_test_kill_point("retention_committed");
    for (int k = 0; k < n; k++) {
        px_err e2 = {0};
        snprintf(q, sizeof q, "COMMIT PREPARED 'pxr_%s_%d'", run, S[k].id);
        if (px_db_exec(S[k].s, &e2, q) != 0)
            /* decided: the removal stays prepared there until recovery commits it */
            px_log(PX_LOG_ERROR, "retention run %s committed, but not yet on shard %s (prognos db shards recover "
                   "commits it): %s %s", run, S[k].server, e2.msg, e2.detail);
        S[k].prepared = 0;
        if (k == 0) px_test_kill_point("retention_commit_prepared");
    }
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    /* not decided: prepared parts are rolled back when the coordinator's connection
     * still answers (its transaction did not commit); otherwise recovery decides */
    int undecided = !decided && PQstatus(c) != CONNECTION_OK;
    for (int k = 0; S && k < n; k++) {
        if (S[k].s && S[k].prepared && !decided && !undecided) {
            px_err e2 = {0};
            snprintf(q, sizeof q, "ROLLBACK PREPARED 'pxr_%s_%d'", run, S[k].id);
            if (px_db_exec(S[k].s, &e2, q) != 0)
                px_log(PX_LOG_WARN, "retention run %s: cannot roll back on shard %s (recovery will): %s", run,
                       S[k].server, e2.detail);
        }
        if (S[k].s) PQfinish(S[k].s);
    }
    if (sqls)
        for (int k = 0; k < n; k++) free(sqls[k]);
    free(sqls);
    free(conns);
    free(S);
    free(years);
    PQclear(pol);
    PQclear(sh);
    PQclear(res);
    px_buf_release(&sql);
    return rc;
}

int px_retention_apply(PGconn *c, const char *archive_dir, px_retention_result *r, px_err *e)
{
    int rc, in_tx = 0, locked = 0, dist = 0;
    char *schema = NULL;
    PGresult *pol = NULL, *res = NULL;
    memset(r, 0, sizeof *r);
    if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        px_err_set(e, PX_ESTATE, "cannot apply retention inside an open transaction");
        return PX_ESTATE;
    }
    if ((rc = px_db_query(c, e, "cannot read the retention policies", &pol,
                          "SELECT table_name FROM wh.retention_policy ORDER BY table_name", 0, NULL)) != 0)
        goto out;
    if ((rc = distributed(c, &dist, e)) != 0) goto out;
    if (!dist && PQntuples(pol) > 0 && (rc = partman_schema(c, 0, &schema, e)) != 0) goto out;
    if ((rc = px_db_query(c, e, "cannot apply retention: locking failed", NULL,
                          "SELECT pg_advisory_lock(" PX_RETENTION_LOCK ")", 0, NULL)) != 0)
        goto out;
    locked = 1;
    if (dist) {
        rc = apply_sharded(c, archive_dir, r, e);
        goto out;
    }
    /* one transaction: pg_partman removes the expired partitions of every table,
     * and each removal is recorded (the refusals read it) and audited with it */
    if ((rc = px_db_query(c, e, "cannot apply retention: BEGIN failed", NULL, "BEGIN", 0, NULL)) != 0) goto out;
    in_tx = 1;
    for (int i = 0; i < PQntuples(pol); i++) {
        const char *pv[] = {PQgetvalue(pol, i, 0), schema};
        if ((rc = px_db_query(c, e, "cannot apply retention with pg_partman", &res,
                              "SELECT partition_name, period_start, period_end, action FROM wh.retention_run($1, $2)",
                              2, pv)) != 0)
            goto out;
        for (int k = 0; k < PQntuples(res) && rc == 0; k++)
            rc = add_item(r, pv[0], PQgetvalue(res, k, 0), PQgetvalue(res, k, 1), PQgetvalue(res, k, 2),
                          PQgetvalue(res, k, 3), e);
        PQclear(res);
        res = NULL;
        if (rc != 0) goto out;
    }
    if ((rc = px_db_query(c, e, "cannot apply retention: COMMIT failed", NULL, "COMMIT", 0, NULL)) != 0) goto out;
    in_tx = 0;
    r->removed = r->n;

    /* archives: this run's and any an interrupted run left in wh_retired */
    if ((rc = px_db_query(c, e, "cannot list the partitions to archive", &res,
                          "SELECT table_name, partition_name, period_start, period_end FROM wh.retention_removed"
                          " WHERE action = 'archive' AND archived_at IS NULL ORDER BY period_start, table_name",
                          0, NULL)) != 0)
        goto out;
    if (PQntuples(res) > 0 && (rc = px_mkdir_p(archive_dir, 0700, e)) != 0) goto out;
    for (int k = 0; k < PQntuples(res); k++) {
        const char *t = PQgetvalue(res, k, 0), *p = PQgetvalue(res, k, 1);
        px_retention_item *it = NULL;
        for (int j = 0; j < r->n; j++)
            if (strcmp(r->items[j].table, t) == 0 && strcmp(r->items[j].partition, p) == 0) it = &r->items[j];
        if (!it) {
            if ((rc = add_item(r, t, p, PQgetvalue(res, k, 2), PQgetvalue(res, k, 3), "archive", e)) != 0) goto out;
            it = &r->items[r->n - 1];
        }
        if ((rc = archive_one(c, archive_dir, t, p, it, e)) != 0) goto out;
        r->archived++;
    }
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    if (locked) px_db_exec(c, NULL, "SELECT pg_advisory_unlock(" PX_RETENTION_LOCK ")");
    PQclear(pol);
    PQclear(res);
    free(schema);
    return rc;
}

/* ---- refusals ------------------------------------------------------------- */

/* Runs a check function; its exception becomes e, with PostgreSQL's message,
 * detail and hint as they are (they are written for the user). */
static int run_check(PGconn *c, const char *sql, int n, const char *const *pv, px_err *e)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, pv, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "22000") == 0) {
            const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            const char *d = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
            const char *h = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
            rc = px_err_set(e, PX_ESTATE, "%s", m ? m : "the period was removed by retention");
            if (d) px_err_detail(e, "%s", d);
            if (h) px_err_hint(e, "%s", h);
        } else {
            rc = px_db_fail(e, c, r, "cannot check the periods removed by retention");
        }
    }
    PQclear(r);
    return rc;
}

int px_retention_check(PGconn *c, const char *from, const char *to, const char *what, px_err *e)
{
    const char *pv[] = {from, to, what ? what : "the request"};
    return run_check(c, "SELECT wh.retention_check($1::date, $2::date, $3)", 3, pv, e);
}

int px_retention_check_period(PGconn *c, const char *period, px_err *e)
{
    const char *pv[] = {period ? period : ""};
    return run_check(c, "SELECT wh.retention_check_period($1)", 1, pv, e);
}

int px_retention_check_partial(PGconn *c, const char *what, px_err *e)
{
    const char *pv[] = {what ? what : "the request"};
    return run_check(c, "SELECT wh.retention_check_partial($1)", 1, pv, e);
}

int px_retention_check_features(PGconn *c, const char *what, px_err *e)
{
    const char *pv[] = {what ? what : "the request"};
    return run_check(c, "SELECT wh.retention_check_features($1)", 1, pv, e);
}
