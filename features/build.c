/* build.c: px_feat_build, the feature-table builder. One transaction per set
 * (repeatable read, so every statement sees the same warehouse): the base SQL
 * fills temporary per-stay tables, the set's SQL creates features._build_<set>,
 * which replaces features.<set>; the build is recorded in features.catalog and
 * audit.events. A set already built from the same batches with the same
 * definition (SQL + comorbidity map) is left alone. */
#include "features/internal.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* serialises builds (engine.h: px_lock_id) */
#define PX_FEAT_LOCK PX_LOCK_FEATURES

/* One step of a build, by PQexec: base.sql and the settings are several statements. */
static int exec_step(PGconn *c, px_err *e, const char *what, const char *set, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "cannot build feature set '%s': %s failed", set, what);
        rc = px_db_fail(e, c, r, msg);
    }
    PQclear(r);
    return rc;
}

/* Runs a one-row query with text parameters; copies up to nout values. */
static int query_row(PGconn *c, px_err *e, const char *set, const char *sql, int nparams, const char *const *params,
                     char **out, const size_t *outlen, int nout, int *found)
{
    char msg[300];
    snprintf(msg, sizeof msg, "cannot build feature set '%s': query failed", set);
    PGresult *r = NULL;
    *found = 0;
    int rc = px_db_query(c, e, msg, &r, sql, nparams, params);
    if (rc != 0) return rc;
    if (PQntuples(r) > 0) {
        *found = 1;
        for (int i = 0; i < nout && i < PQnfields(r); i++)
            snprintf(out[i], outlen[i], "%s", PQgetisnull(r, 0, i) ? "" : PQgetvalue(r, 0, i));
    }
    PQclear(r);
    return rc;
}

static const char *role_name(px_col_role r)
{
    static const char *const n[] = {"key", "group", "time", "feature", "label", "info"};
    return n[r];
}

/* the catalog's columns array: [{name, role, kind, doc}] */
static int columns_json(const px_feat_set_info *s, px_buf *b, char *names, size_t nameslen)
{
    feat_col cols[PX_FEAT_MAX_COLS];
    int n = feat_columns(s, cols, PX_FEAT_MAX_COLS);
    if (n < 0) return PX_EINVAL;
    size_t len = 0;
    names[0] = '\0';
    int rc = px_buf_addc(b, '[');
    for (int i = 0; i < n && rc == 0; i++) {
        int cci = 0, elix = 0;
        for (int k = 0; k < feat_comorbs_count; k++)
            if (cols[i].name == feat_comorbs[k].col) {
                cci = strncmp(cols[i].name, "cci_", 4) == 0;
                elix = !cci;
            }
        rc = px_buf_printf(b, "%s{\"name\":\"%s\",\"role\":\"%s\",\"kind\":\"%s\",\"doc\":", i ? "," : "", cols[i].name,
                           role_name(cols[i].role), cols[i].kind == PX_COL_NUMERIC ? "numeric" : "categorical");
        if (rc == 0 && (cci || elix)) {
            char doc[512];
            snprintf(doc, sizeof doc, "1 if a diagnosis is in the %s category '%s' (Quan 2005 codes; this stay and "
                     "prior stays, as the set's documentation says), else 0", cci ? "Charlson" : "Elixhauser", cols[i].doc);
            rc = px_buf_json_str(b, doc, strlen(doc));
        } else if (rc == 0) {
            rc = px_buf_json_str(b, cols[i].doc, strlen(cols[i].doc));
        }
        if (rc == 0) rc = px_buf_addc(b, '}');
        len += (size_t)snprintf(names + len, len < nameslen ? nameslen - len : 0, "%s%s", i ? "," : "", cols[i].name);
    }
    if (rc == 0) rc = px_buf_adds(b, "]");
    if (rc == 0) rc = px_buf_addc(b, '\0');
    if (len >= nameslen) return PX_EINVAL;
    return rc == 0 ? 0 : PX_ENOMEM;
}

/* The per-stay tables of base.sql, kept in the session's temporary schema and
 * shared by the sets built on this connection: valid while the warehouse holds the
 * same batches (every change to it is a batch) and base.sql and the map are the
 * same, which px_base_key records. Otherwise they are dropped and rebuilt. */
static int base_tables(PGconn *c, px_err *e, const char *set, const char *base, const char *digest,
                       const char *batches)
{
    px_buf key = {0};
    char hash[65], cached[8] = "f";
    int rc = 0, found = 0;
    if (px_buf_printf(&key, "%s\n%s", base, digest) != 0) return px_err_set(e, PX_ENOMEM, "out of memory");
    px_sha256_hex(key.data, key.len, hash);
    key.len = 0;
    if (px_buf_printf(&key, "%s %s", hash, batches) != 0 || px_buf_addc(&key, '\0') != 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    {
        char *o[] = {cached};
        size_t ol[] = {sizeof cached};
        if ((rc = query_row(c, e, set, "SELECT to_regclass('pg_temp.px_base_key') IS NOT NULL", 0, NULL, o, ol, 1,
                            &found)) != 0)
            goto out;
        if (strcmp(cached, "t") == 0) {
            const char *pv[] = {key.data};
            if ((rc = query_row(c, e, set, "SELECT bool_and(k = $1)::text FROM pg_temp.px_base_key", 1, pv, o, ol, 1,
                                &found)) != 0)
                goto out;
            if (strcmp(cached, "true") == 0) goto out; /* still valid */
        }
    }
    if ((rc = exec_step(c, e, "dropping old per-stay tables", set,
                        "DROP TABLE IF EXISTS pg_temp.px_enc, pg_temp.px_mask, pg_temp.px_base_key")) != 0 ||
        (rc = exec_step(c, e, "the per-stay tables (base.sql)", set, base)) != 0)
        goto out;
    {
        const char *pv[] = {key.data};
        PGresult *r = PQexecParams(c, "CREATE TEMP TABLE px_base_key AS SELECT $1::text AS k", 1, NULL, pv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            char what[200];
            snprintf(what, sizeof what, "cannot build feature set '%s': recording the per-stay tables failed", set);
            rc = px_db_fail(e, c, r, what);
        }
        PQclear(r);
    }
out:
    px_buf_release(&key);
    return rc;
}

int px_feat_build(PGconn *c, const char *set, px_feat_build_result *r, px_err *e)
{
    const px_feat_set_info *s = px_feat_set_find(set);
    memset(r, 0, sizeof *r);
    if (!s) return px_err_set(e, PX_EINVAL, "unknown feature set '%s' (readmission, mortality or los)", set ? set : "");
    double t0 = px_mono_s();
    int rc = 0, in_tx = 0, found = 0, locked = 0;
    char *base = NULL, *body = NULL;
    px_buf hashed = {0}, cols = {0}, sql = {0};
    char names[8192], lock[64];
    char sig_db[4096], digest[80], batches[65536], last_id[32], last_hash[80], last_batches[65536], last_rows[32],
        last_pos[32], exists[8];
    const char *name = s->name;

    if (!(base = feat_expand_sql(feat_sql_base)) || !(body = feat_expand_sql(feat_set_sql(s)))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory building feature set '%s'", name);
        goto out;
    }
    if ((rc = columns_json(s, &cols, names, sizeof names)) != 0) {
        rc = px_err_set(e, rc, "cannot describe the columns of feature set '%s'", name);
        goto out;
    }
    if (PQtransactionStatus(c) != PQTRANS_IDLE) {
        rc = px_err_set(e, PX_ESTATE, "cannot build feature set '%s' inside an open transaction", name);
        px_err_hint(e, "the build commits its own transaction; call it between transactions");
        goto out;
    }
    /* The lock is taken before the transaction's snapshot, so that a build that
     * waited for another one sees its result (and finds the set unchanged). */
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%d)", PX_FEAT_LOCK);
    if ((rc = exec_step(c, e, "locking", name, lock)) != 0) goto out;
    locked = 1;
    /* a sharded warehouse: a killed load's batch, recorded here but still
     * prepared on some shard, is committed first (else its rows would be missing) */
    {
        px_shards_recovery rec;
        if ((rc = px_shards_recover(c, 0, &rec, e)) != 0) goto out;
    }
    if ((rc = exec_step(c, e, "BEGIN", name, "BEGIN ISOLATION LEVEL REPEATABLE READ")) != 0) goto out;
    in_tx = 1;
    /* big hash aggregates and joins; JIT compiles for longer than these queries run */
    if ((rc = exec_step(c, e, "settings", name, "SET LOCAL work_mem = '256MB'; SET LOCAL jit = off")) != 0) goto out;
    if ((rc = px_shards_tune(c, e)) != 0) goto out; /* a sharded warehouse: per-shard aggregates */
    /* stays that lost their diagnoses or procedures to retention would give partial features */
    if ((rc = px_retention_check_partial(c, "features build", e)) != 0) goto out;

    /* the categories must be the ones this build generates SQL for */
    {
        char *o[] = {sig_db};
        size_t ol[] = {sizeof sig_db};
        if ((rc = query_row(c, e, name,
                            "SELECT string_agg(format('%s %s %s %s', category, bit, coalesce(weight::text, '-'),"
                            " coalesce(superseded_by, '-')) || E'\\n', '' ORDER BY bit) FROM features.comorbidity_category",
                            0, NULL, o, ol, 1, &found)) != 0)
            goto out;
        if (strcmp(sig_db, feat_comorb_signature()) != 0) {
            rc = px_err_set(e, PX_ECORRUPT, "cannot build feature set '%s': features.comorbidity_category does not "
                            "match this build of prognos", name);
            px_err_hint(e, "the database was migrated by another version of prognos");
            goto out;
        }
    }
    {
        char *o[] = {digest, batches};
        size_t ol[] = {sizeof digest, sizeof batches};
        if ((rc = query_row(c, e, name,
                            "SELECT features.map_digest(),"
                            " (SELECT coalesce(array_agg(batch_id ORDER BY batch_id), '{}') FROM etl.batches)::text",
                            0, NULL, o, ol, 2, &found)) != 0)
            goto out;
    }
    /* definition = the SQL run (base and set, placeholders expanded) + the map's digest */
    if (px_buf_printf(&hashed, "%s\n-- set %s\n%s\n-- comorbidity map %s\n", base, name, body, digest) != 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    px_sha256_hex(hashed.data, hashed.len, r->def_hash);

    {
        const char *pv[] = {name, s->table};
        char *o[] = {last_id, last_hash, last_batches, last_rows, last_pos, exists};
        size_t ol[] = {sizeof last_id, sizeof last_hash, sizeof last_batches, sizeof last_rows, sizeof last_pos,
                       sizeof exists};
        if ((rc = query_row(c, e, name,
                            "SELECT build_id, definition_hash, source_batches::text, row_count, positives,"
                            /* a table is current while it exists and retention removed nothing since */
                            " to_regclass($2) IS NOT NULL AND NOT wh.retention_removed_since(built_at)"
                            " FROM features.catalog WHERE set_name = $1"
                            " ORDER BY build_id DESC LIMIT 1",
                            2, pv, o, ol, 6, &found)) != 0)
            goto out;
        if (found && strcmp(exists, "t") == 0 && strcmp(last_hash, r->def_hash) == 0 &&
            strcmp(last_batches, batches) == 0) {
            r->unchanged = 1;
            r->build_id = atoll(last_id);
            r->rows = atoll(last_rows);
            r->positives = atoll(last_pos);
            r->seconds = px_mono_s() - t0;
            goto out; /* rolled back below: nothing changed */
        }
    }

    if ((rc = base_tables(c, e, name, base, digest, batches)) != 0) goto out;
    if ((rc = px_buf_printf(&sql, "DROP TABLE IF EXISTS features._build_%s", name)) != 0 ||
        (rc = exec_step(c, e, "dropping a leftover build table", name, sql.data)) != 0)
        goto out;
    if ((rc = exec_step(c, e, "the feature table", name, body)) != 0) goto out;
    sql.len = 0;
    /* Statistics for the columns queries join, group and filter on (KPI cells, periods,
     * the label), not all 80-odd: ANALYZE reads each column of a sampled row with
     * heap_getattr, which behind a text column walks the row from its start, so a whole
     * table's ANALYZE cost about 0.3 s for 15,000 rows (and as much at any size, the
     * sample being 30,000 rows), most of a small build's time. The other columns get a
     * statistics target of 0 rather than an ANALYZE column list: after a partial ANALYZE
     * autovacuum would analyze the whole table again a minute later. */
    if (px_buf_printf(&sql,
                      "DROP TABLE IF EXISTS %s; ALTER TABLE features._build_%s RENAME TO %s;"
                      " ALTER TABLE %s ADD PRIMARY KEY (encounter_id);"
                      " DO $px$ BEGIN EXECUTE (SELECT 'ALTER TABLE %s '"
                      " || string_agg(format('ALTER COLUMN %%I SET STATISTICS 0', attname), ', ' ORDER BY attnum)"
                      " FROM pg_attribute WHERE attrelid = '%s'::regclass AND attnum > 0 AND NOT attisdropped"
                      " AND attname <> ALL (ARRAY['encounter_id', 'patient_id', 'facility_id', 'department',"
                      " 'admission_date', 'discharge_date', '%s'])); END $px$;"
                      " ANALYZE %s",
                      s->table, name, name, s->table, s->table, s->table, s->label, s->table) != 0) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = exec_step(c, e, "replacing the table", name, sql.data)) != 0) goto out;

    /* the table must have exactly the documented columns, in order */
    {
        char got[8192], counts[64];
        const char *pv[] = {s->table};
        char *o[] = {got};
        size_t ol[] = {sizeof got};
        if ((rc = query_row(c, e, name,
                            "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute"
                            " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                            1, pv, o, ol, 1, &found)) != 0)
            goto out;
        if (strcmp(got, names) != 0) {
            rc = px_err_set(e, PX_ECORRUPT, "feature set '%s': the table's columns differ from their descriptions", name);
            px_err_detail(e, "table: %s", got);
            goto out;
        }
        sql.len = 0;
        if (s->binary)
            rc = px_buf_printf(&sql, "SELECT count(*)::text || ' ' || count(*) FILTER (WHERE %s = 1) FROM %s", s->label,
                               s->table);
        else
            rc = px_buf_printf(&sql, "SELECT count(*)::text || ' 0' FROM %s", s->table);
        if (rc != 0) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto out;
        }
        if ((rc = px_db_scalar(c, e, counts, sizeof counts, sql.data)) != 0) goto out;
        if (sscanf(counts, "%lld %lld", &r->rows, &r->positives) != 2) {
            rc = px_err_set(e, PX_EDB, "feature set '%s': cannot count the rows", name);
            goto out;
        }
    }

    r->seconds = px_mono_s() - t0;
    {
        char rows[32], pos[32], secs[32], id[32];
        snprintf(rows, sizeof rows, "%lld", r->rows);
        snprintf(pos, sizeof pos, "%lld", r->positives);
        snprintf(secs, sizeof secs, "%.3f", r->seconds);
        const char *pv[] = {name, s->table, r->def_hash, rows, pos, batches, cols.data, secs};
        char *o[] = {id};
        size_t ol[] = {sizeof id};
        if ((rc = query_row(c, e, name,
                            "WITH b AS (INSERT INTO features.catalog (set_name, table_name, definition_hash, row_count,"
                            " positives, source_batches, columns, seconds)"
                            " VALUES ($1, $2, $3, $4, $5, $6::bigint[], $7::jsonb, $8) RETURNING build_id),"
                            " a AS (INSERT INTO audit.events (action, object, detail)"
                            "  SELECT 'features.build', $2, jsonb_build_object('build_id', build_id, 'rows', $4::bigint,"
                            "  'positives', $5::bigint, 'definition_hash', $3, 'source_batches', $6::bigint[]) FROM b)"
                            " SELECT build_id FROM b",
                            8, pv, o, ol, 1, &found)) != 0)
            goto out;
        r->build_id = atoll(id);
    }
    if ((rc = exec_step(c, e, "COMMIT", name, "COMMIT")) != 0) goto out;
    in_tx = 0;
    px_log(PX_LOG_INFO, "built %s: %lld rows, %lld positives, %.1f s (build %lld)", s->table, r->rows, r->positives,
           r->seconds, r->build_id);
out:
    if (in_tx) px_db_exec(c, NULL, "ROLLBACK");
    if (locked) {
        snprintf(lock, sizeof lock, "SELECT pg_advisory_unlock(%d)", PX_FEAT_LOCK);
        px_db_exec(c, NULL, lock);
    }
    if (rc != 0) memset(r, 0, sizeof *r);
    free(base);
    free(body);
    px_buf_release(&hashed);
    px_buf_release(&cols);
    px_buf_release(&sql);
    return rc;
}
