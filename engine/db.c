/* db.c: warehouse connections, small query helpers and the migration runner.
 * px_db_connect() is the one door to the warehouse: it initialises and starts
 * the embedded server when needed and applies pending migrations, so every
 * command that needs the database just calls it. */
#include "engine/internal.h"
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>


/* every session's settings: warnings only, ISO dates, UTC */
#define PX_DB_SESSION_SQL "SET client_min_messages = warning; SET datestyle = 'ISO, YMD'; SET TIME ZONE 'UTC'"

PGconn *px_db_connect_url(const char *url, px_err *e)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        px_err_set(e, PX_EDB, "cannot connect to the database");
        px_err_detail(e, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PGresult *r = PQexec(c, PX_DB_SESSION_SQL);
    PQclear(r);
    return c;
}

int px_db_require(const px_config *cfg, px_err *e)
{
    if (cfg->external || px_pg_initialized(cfg)) return 0;
    px_err_set(e, PX_ESTATE, "no warehouse in '%s'", cfg->home);
    px_err_detail(e, "PROGNOS_HOME (default ./var) names a directory that holds no "
                     "initialised warehouse; commands that only read do not create one");
    px_err_hint(e, "run 'prognos db init' to create it there, or set PROGNOS_HOME to the directory that holds "
                   "the warehouse (or PROGNOS_DB to an external database)");
    return PX_ESTATE;
}

PGconn *px_db_open(const px_config *cfg, px_err *e)
{
    if (px_db_require(cfg, e) != 0) return NULL;
    return px_db_connect(cfg, e);
}

PGconn *px_db_connect(const px_config *cfg, px_err *e)
{
    char url[13000];
    if (px_pg_url(cfg, url, sizeof url, e) != 0) return NULL;
    PGconn *c = NULL;
    if (!cfg->external) {
        /* A running embedded server is the common case: connect straight away (asking
         * whether it runs first, as px_pg_start does, costs a second connection). Any
         * failure, from no server to one in recovery, takes the start path, which
         * waits, cleans up or starts, and says what is wrong. */
        int inited = px_pg_initialized(cfg);
        if (inited) {
            /* (bounded as the ping it replaces: a postmaster that accepts on its socket
             * but never answers takes the start path, whose wait says so) */
            char direct[13100];
            snprintf(direct, sizeof direct, "%s&connect_timeout=10", url);
            c = PQconnectdb(direct);
            if (PQstatus(c) == CONNECTION_OK) {
                PQclear(PQexec(c, PX_DB_SESSION_SQL));
            } else {
                PQfinish(c);
                c = NULL;
            }
        }
        if (!c && (inited ? px_pg_start(cfg, e) : px_pg_init(cfg, e)) != 0) return NULL;
    }
    if (!c && !(c = px_db_connect_url(url, e))) return NULL;
    int applied = 0;
    if (px_db_migrate(c, &applied, e) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

int px_db_exec(PGconn *c, px_err *e, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) rc = px_db_fail(e, c, r, "database command failed");
    PQclear(r);
    return rc;
}

int px_db_execf(PGconn *c, px_err *e, const char *fmt, ...)
{
    char stack[4096], *sql = stack;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (n < 0) return px_err_set(e, PX_EINVAL, "bad SQL format");
    if ((size_t)n >= sizeof stack) {
        sql = malloc((size_t)n + 1);
        if (!sql) return px_err_set(e, PX_ENOMEM, "out of memory");
        va_start(ap, fmt);
        vsnprintf(sql, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    int rc = px_db_exec(c, e, sql);
    if (sql != stack) free(sql);
    return rc;
}

int px_db_scalar(PGconn *c, px_err *e, char *out, size_t outlen, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = px_db_fail(e, c, r, "query returned no value");
    } else if (PQntuples(r) < 1 || PQnfields(r) < 1) {
        rc = px_err_set(e, PX_EDB, "query returned no value");
    } else {
        snprintf(out, outlen, "%s", PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return rc;
}

/* 1 when every migration this binary carries is recorded: the common case of every
 * command, answered by two short queries without a lock or a DDL statement. Versions
 * are only ever added, so a "yes" cannot go stale; anything else (no ledger yet, a
 * version missing, an error) takes the full path below, which checks again under the
 * migrators' lock. */
static int migrations_current(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT to_regclass('public.prognos_migrations') IS NOT NULL");
    int have = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!have) return 0;
    char list[4096];
    size_t n = 0;
    list[n++] = '{';
    for (int i = 0; i < eng_migrations_count && n < sizeof list - 16; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", i ? "," : "", eng_migrations[i].version);
    if (n >= sizeof list - 16) return 0;
    list[n++] = '}';
    list[n] = '\0';
    const char *params[1] = {list};
    r = PQexecParams(c, "SELECT count(DISTINCT version) FROM public.prognos_migrations WHERE version = ANY($1::int[])",
                     1, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && atoi(PQgetvalue(r, 0, 0)) == eng_migrations_count;
    PQclear(r);
    return ok;
}

int px_db_migrate(PGconn *c, int *applied, px_err *e)
{
    int rc = 0;
    *applied = 0;
    if (migrations_current(c)) return 0;
    if ((rc = px_db_exec(c, e, "CREATE TABLE IF NOT EXISTS public.prognos_migrations ("
                                 " version integer PRIMARY KEY, name text NOT NULL,"
                                 " applied_at timestamptz NOT NULL DEFAULT now())")) != 0) {
        /* two first-time migrators may race on CREATE TABLE IF NOT EXISTS */
        if ((rc = px_db_exec(c, e, "SELECT 1 FROM public.prognos_migrations LIMIT 1")) != 0) return rc;
    }
    char lock[128];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%d)", PX_LOCK_MIGRATE); /* serialises migrators */
    if ((rc = px_db_exec(c, e, lock)) != 0) return rc;
    for (int i = 0; i < eng_migrations_count; i++) {
        const eng_migration *m = &eng_migrations[i];
        /* by membership, not max(version): a migration numbered below one already
         * applied (branches merged in a different order) is still applied */
        char q[128], cur[32];
        snprintf(q, sizeof q, "SELECT count(*) FROM public.prognos_migrations WHERE version = %d", m->version);
        if ((rc = px_db_scalar(c, e, cur, sizeof cur, q)) != 0) goto out;
        if (atoi(cur) > 0) continue;
        if ((rc = px_db_exec(c, e, "BEGIN")) != 0) goto out;
        PGresult *r = PQexec(c, m->sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            char what[160];
            snprintf(what, sizeof what, "migration %03d_%s failed", m->version, m->name);
            px_db_fail(e, c, r, what);
            PQclear(r);
            px_db_exec(c, NULL, "ROLLBACK");
            rc = PX_EDB;
            goto out;
        }
        PQclear(r);
        const char *params[2];
        char ver[16];
        snprintf(ver, sizeof ver, "%d", m->version);
        params[0] = ver;
        params[1] = m->name;
        r = PQexecParams(c, "INSERT INTO public.prognos_migrations (version, name) VALUES ($1, $2)", 2, NULL,
                         params, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            rc = px_db_fail(e, c, NULL, "cannot record a migration");
            px_db_exec(c, NULL, "ROLLBACK");
            goto out;
        }
        if ((rc = px_db_exec(c, e, "COMMIT")) != 0) goto out;
        px_log(PX_LOG_INFO, "applied migration %03d_%s", m->version, m->name);
        (*applied)++;
    }
out:
    snprintf(lock, sizeof lock, "SELECT pg_advisory_unlock(%d)", PX_LOCK_MIGRATE);
    px_db_exec(c, NULL, lock);
    return rc;
}

/* ---- the query helpers and the COPY-in writer (issue 13) ---------------------- */

int px_db_fail(px_err *e, PGconn *c, const PGresult *r, const char *what)
{
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *sdetail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *shint = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_HINT) : NULL;
    px_err_set(e, PX_EDB, "%s", what ? what : "database command failed");
    if (primary) {
        px_err_detail(e, "%s%s%s", primary, sdetail ? ": " : "", sdetail ? sdetail : "");
    } else {
        /* no result (a lost connection), or a client-side error: libpq's message */
        const char *m = r && *PQresultErrorMessage(r) ? PQresultErrorMessage(r) : PQerrorMessage(c);
        size_t n = strlen(m);
        while (n && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
        px_err_detail(e, "%.*s", (int)n, m);
    }
    if (shint) px_err_hint(e, "%s", shint);
    return PX_EDB;
}

int px_db_query(PGconn *c, px_err *e, const char *what, PGresult **out, const char *sql, int nparams,
                const char *const *params)
{
    if (out) *out = NULL;
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        px_db_fail(e, c, r, what);
        PQclear(r);
        return PX_EDB;
    }
    if (out) *out = r;
    else PQclear(r);
    return 0;
}

int px_db_audit_commit(PGconn *c, px_err *e, const char *what, const char *sql, int nparams,
                       const char *const *params, const char *commit_what, int *in_tx)
{
    int rc = px_db_query(c, e, what, NULL, sql, nparams, params);
    if (rc == 0) rc = px_db_query(c, e, commit_what, NULL, "COMMIT", 0, NULL);
    if (rc == 0) *in_tx = 0;
    return rc;
}

int px_db_value(PGconn *c, px_err *e, const char *what, char **out, const char *sql, int nparams,
                const char *const *params)
{
    PGresult *r = NULL;
    *out = NULL;
    int rc = px_db_query(c, e, what, &r, sql, nparams, params);
    if (rc != 0) return rc;
    if (PQntuples(r) > 0 && PQnfields(r) > 0 && !PQgetisnull(r, 0, 0)) {
        *out = strdup(PQgetvalue(r, 0, 0));
        if (!*out) rc = px_err_set(e, PX_ENOMEM, "out of memory");
    }
    PQclear(r);
    return rc;
}

int px_copy_in_begin(px_copy_in *w, PGconn *c, const char *copy_sql, const char *what, px_err *e)
{
    memset(w, 0, sizeof *w);
    w->c = c;
    w->chunk = (size_t)1 << 20;
    w->what = what ? what : "COPY";
    PGresult *r = PQexec(c, copy_sql);
    int ok = PQresultStatus(r) == PGRES_COPY_IN;
    if (!ok) {
        char msg[300];
        snprintf(msg, sizeof msg, "cannot start %s", w->what);
        px_db_fail(e, c, r, msg);
    }
    PQclear(r);
    w->open = ok;
    return ok ? 0 : PX_EDB;
}

int px_copy_in_flush(px_copy_in *w, int force, px_err *e)
{
    if (!w->open) return px_err_set(e, PX_EDB, "%s: the COPY is not open", w->what);
    if (w->buf.len == 0 || (!force && w->buf.len < w->chunk)) return 0;
    if (PQputCopyData(w->c, w->buf.data, (int)w->buf.len) != 1) {
        char msg[300];
        snprintf(msg, sizeof msg, "lost the database connection while %s", w->what);
        return px_db_fail(e, w->c, NULL, msg);
    }
    w->buf.len = 0;
    return 0;
}

int px_copy_in_end(px_copy_in *w, int abort, long long *rows, px_err *e)
{
    int rc = 0;
    char msg[300];
    if (rows) *rows = 0;
    if (w->open) {
        if (!abort) rc = px_copy_in_flush(w, 1, e);
        if (PQputCopyEnd(w->c, (abort || rc) ? "aborted by prognos" : NULL) != 1 && rc == 0 && !abort) {
            snprintf(msg, sizeof msg, "cannot finish %s", w->what);
            rc = px_db_fail(e, w->c, NULL, msg);
        }
        PGresult *r;
        while ((r = PQgetResult(w->c)) != NULL) {
            if (PQresultStatus(r) == PGRES_COMMAND_OK) {
                if (rows) *rows = atoll(PQcmdTuples(r));
            } else if (rc == 0 && !abort) {
                snprintf(msg, sizeof msg, "the database refused %s", w->what);
                rc = px_db_fail(e, w->c, r, msg);
            }
            PQclear(r);
        }
        w->open = 0;
    }
    px_buf_release(&w->buf);
    return rc;
}

const char *px_db_migration_containing(const char *needle)
{
    for (int i = 0; i < eng_migrations_count; i++)
        if (strstr(eng_migrations[i].sql, needle)) return eng_migrations[i].sql;
    return NULL;
}
