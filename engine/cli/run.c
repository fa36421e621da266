/* run.c: the pipeline runner behind `prognos run` (see cmd_run.c for its usage):
 * each step calls the library function its own command calls (px_etl_load,
 * px_feat_build, px_retrain_ex, px_kpi_compute, px_kpi_report, px_drift_check), never
 * the binary; retries transient causes, found by looking (a new connection, pg_locks),
 * with backoff; records every step in run.steps as it goes. */
#include "engine/cli/run.h"
#include "features/features.h"
#include "kpi/kpi.h"
#include "registry/registry.h"
#include "serve/serve.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const px_run_step_names[ST__COUNT] = {"load", "features", "retrain", "kpi", "report", "drift"};

/* The advisory locks each step's library code takes (engine.h, px_lock_id): one
 * bigint key, or the registry's per-model lock (class PX_LOCK_REGISTRY_CLASS with
 * a second int key). Looked up in pg_locks before a step starts and after it fails. */
static const struct { int one[2]; int registry; } step_locks[ST__COUNT] = {
    [ST_LOAD] = {{PX_LOCK_ETL, 0}, 0},
    [ST_FEATURES] = {{PX_LOCK_FEATURES, 0}, 0},
    [ST_RETRAIN] = {{PX_LOCK_FEATURES, 0}, 1},
    [ST_KPI] = {{PX_LOCK_KPI, PX_LOCK_FEATURES}, 0},
};

/* step k's locks as a pg_locks condition; "" when the step takes none */
static void step_lock_cond(int k, char *out, size_t len)
{
    out[0] = '\0';
    if (!step_locks[k].one[0]) return;
    int n = snprintf(out, len, "((objsubid = 1 AND classid = 0 AND objid IN (%d", step_locks[k].one[0]);
    if (step_locks[k].one[1]) n += snprintf(out + n, len - (size_t)n, ", %d", step_locks[k].one[1]);
    n += snprintf(out + n, len - (size_t)n, "))");
    if (step_locks[k].registry)
        n += snprintf(out + n, len - (size_t)n, " OR (objsubid = 2 AND classid = %d)", PX_LOCK_REGISTRY_CLASS);
    snprintf(out + n, len - (size_t)n, ")");
}

/* ---- small helpers ------------------------------------------------------- */

static void out_err(step_out *so, int code, const px_err *e)
{
    so->exit_code = code;
    snprintf(so->msg, sizeof so->msg, "%s%s%s", e->msg, e->detail[0] ? ": " : "", e->detail);
    for (char *p = so->msg; *p; p++)
        if (*p == '\n') *p = ' ';
}

int px_run_parse_steps(const char *s, unsigned *out)
{
    *out = 0;
    char buf[256];
    px_run_copy(buf, sizeof buf, s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = -1;
        for (int i = 0; i < ST__COUNT; i++)
            if (strcmp(t, px_run_step_names[i]) == 0) k = i;
        if (k < 0 || (*out & (1u << k))) return -1;
        *out |= 1u << k;
    }
    return *out ? 0 : -1;
}


/* Runs a bookkeeping statement with text parameters (NULL = SQL NULL). Returns the
 * result (caller clears) or NULL with e set. */
PGresult *px_run_book(PGconn *c, px_err *e, const char *sql, int n, const char *const *v)
{
    PGresult *r = NULL;
    if (px_db_query(c, e, "cannot record the run in run.runs / run.steps", &r, sql, n, v) != 0) return NULL;
    return r;
}

/* 1 when c answers a query. */
static int db_alive(PGconn *c)
{
    if (!c || PQstatus(c) != CONNECTION_OK) return 0;
    PGresult *r = PQexec(c, "SELECT 1");
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

/* (Re)connects the bookkeeping connection and takes the runner lock. Returns 0,
 * 1 when the lock is held by another runner, or a negative error (e set). */
int px_run_connect(runner *R, px_err *e)
{
    if (R->c) PQfinish(R->c);
    if (!(R->c = px_db_connect(&R->cfg, e))) return e->code ? e->code : PX_EDB;
    char q[96];
    snprintf(q, sizeof q, "SELECT pg_try_advisory_lock(%d)", RUNNER_LOCK);
    PGresult *r = px_run_book(R->c, e, q, 0, NULL);
    if (!r) return PX_EDB;
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return got ? 0 : 1;
}

/* The pid of another session holding a lock step k needs, or 0. */
static int lock_holder(runner *R, int k)
{
    char cond[256], q[640];
    step_lock_cond(k, cond, sizeof cond);
    if (!cond[0] || !db_alive(R->c)) return 0;
    snprintf(q, sizeof q,
             "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
             " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND %s LIMIT 1",
             cond);
    PGresult *r = PQexec(R->c, q);
    int pid = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoi(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return pid;
}

/* Looks for a transient cause of step k's failure (or, before it starts, of one
 * it would meet): the database unreachable, the step's connection lost, a lock
 * held. Writes the cause into why and returns 1, or returns 0. */
static int transient_cause(runner *R, int k, const step_out *so, char *why, size_t n)
{
    if (!db_alive(R->c)) {
        px_err e = {0};
        int rc = px_run_connect(R, &e);
        if (rc < 0) {
            snprintf(why, n, "database unavailable: %s", e.msg);
            return 1;
        }
        if (rc == 1) {
            snprintf(why, n, "database was unavailable; another prognos run took over meanwhile");
            return 0;
        }
    }
    int pid = lock_holder(R, k);
    if (pid) {
        snprintf(why, n, "a lock the %s step needs is held by another session (backend pid %d)", px_run_step_names[k], pid);
        return 1;
    }
    if (so && so->conn_lost) {
        snprintf(why, n, "the connection to the database was lost during the step");
        return 1;
    }
    return 0;
}

/* ---- the steps ------------------------------------------------------------ */

static PGconn *step_connect(runner *R, step_out *so)
{
    px_err e = {0};
    PGconn *c = px_db_connect(&R->cfg, &e);
    if (!c) {
        out_err(so, PX_EXIT_FAIL, &e);
        so->conn_lost = 1;
    }
    return c;
}

/* After a library call failed on c: was it the connection? */
static void note_conn(PGconn *c, step_out *so)
{
    if (PQstatus(c) != CONNECTION_OK || !db_alive(c)) so->conn_lost = 1;
}

static void step_load(runner *R, step_out *so)
{
    px_etl_params p = px_etl_default_params();
    const run_opts *o = &R->o;
    p.source = o->source;
    p.format = strcmp(o->format, "synpuf") == 0 ? PX_FMT_SYNPUF
               : strcmp(o->format, "postgres") == 0 ? PX_FMT_POSTGRES : PX_FMT_CANONICAL;
    if (o->as_of[0]) p.today = o->as_of;
    if (o->future[0]) p.allow_future = strcmp(o->future, "allow") == 0;
    if (o->max_reject_rate >= 0) p.max_reject_rate = o->max_reject_rate;
    px_etl_result r;
    px_err e = {0};
    int rc = px_etl_load(&R->cfg, &p, &r, &e);
    if (rc == PX_ENOTHING) {
        so->exit_code = PX_EXIT_NOTHING;
        px_run_copy(so->msg, sizeof so->msg, e.msg);
    } else if (rc != 0) {
        out_err(so, PX_EXIT_FAIL, &e); /* transient or not: the probes decide (transient_cause) */
    } else {
        so->exit_code = PX_EXIT_OK;
        snprintf(so->msg, sizeof so->msg, "batch %lld: %d file%s loaded (%d skipped), %lld rows read, %lld loaded, "
                 "%lld rejected", r.batch_id, r.files_loaded, r.files_loaded == 1 ? "" : "s", r.files_skipped,
                 r.rows_read, r.rows_loaded, r.rows_rejected);
        snprintf(so->result, sizeof so->result, "{\"batch_id\":%lld,\"rows_loaded\":%lld,\"rows_rejected\":%lld}",
                 r.batch_id, r.rows_loaded, r.rows_rejected);
    }
    if (r.notes[0]) fprintf(stderr, "prognos run: load: warning: %s", r.notes);
}

static void step_features(runner *R, step_out *so)
{
    PGconn *c = step_connect(R, so);
    if (!c) return;
    int built = 0;
    size_t n = 0;
    so->exit_code = PX_EXIT_OK;
    for (int k = 0; k < px_feat_sets_count; k++) {
        px_feat_build_result r;
        px_err e = {0};
        if (px_feat_build(c, px_feat_sets[k].name, &r, &e) != 0) {
            out_err(so, PX_EXIT_FAIL, &e);
            note_conn(c, so);
            break;
        }
        built += !r.unchanged;
        n += (size_t)snprintf(so->msg + n, sizeof so->msg - n, "%s%s %s (%lld rows)", k ? ", " : "",
                              px_feat_sets[k].name, r.unchanged ? "unchanged" : "built", r.rows);
        if (n >= sizeof so->msg) n = sizeof so->msg - 1;
    }
    if (so->exit_code == PX_EXIT_OK && !built) so->exit_code = PX_EXIT_NOTHING;
    PQfinish(c);
}

static void step_retrain(runner *R, step_out *so)
{
    PGconn *c = step_connect(R, so);
    if (!c) return;
    static const char *const what[] = {"promoted", "kept", "unchanged", "failed its quality gates", "failed"};
    px_retrain_params p = px_retrain_default_params();
    if (R->o.hier_boot >= 0) p.hier.boot = R->o.hier_boot;
    int promoted = 0, failed = 0, gates = 0;
    size_t n = 0;
    char res[256] = "";
    size_t rn = 0;
    for (int k = 0; k < px_feat_sets_count; k++) {
        const char *name = px_feat_sets[k].name;
        px_err e = {0};
        px_retrain_outcome oc = PX_RETRAIN_FAILED;
        int rc = px_retrain_ex(c, &R->cfg, name, &p, stdout, &oc, &e);
        fflush(stdout);
        if (rc == 0) promoted++;
        else if (oc == PX_RETRAIN_GATES_FAILED) gates++;
        else if (rc != PX_ENOTHING) {
            failed++;
            oc = PX_RETRAIN_FAILED;
            px_err_print(&e);
            note_conn(c, so);
        }
        n += (size_t)snprintf(so->msg + n, sizeof so->msg - n, "%s%s %s", k ? ", " : "", name, what[oc]);
        if (n >= sizeof so->msg) n = sizeof so->msg - 1;
        if (oc == PX_RETRAIN_FAILED && n < sizeof so->msg - 1) {
            n += (size_t)snprintf(so->msg + n, sizeof so->msg - n, " (%s)", e.msg);
            if (n >= sizeof so->msg) n = sizeof so->msg - 1;
        }
        rn += (size_t)snprintf(res + rn, sizeof res - rn, "%s\"%s\":\"%s\"", k ? "," : "", name,
                               oc == PX_RETRAIN_GATES_FAILED ? "gates_failed" : what[oc]);
        if (rn >= sizeof res) rn = sizeof res - 1;
        if (PQstatus(c) != CONNECTION_OK) break; /* no use trying the others on a dead connection */
    }
    so->exit_code = failed ? PX_EXIT_FAIL : gates ? PX_EXIT_GATES : promoted ? PX_EXIT_OK : PX_EXIT_NOTHING;
    snprintf(so->result, sizeof so->result, "{%s}", res);
    PQfinish(c);
}

static void step_kpi(runner *R, step_out *so, long long *kpi_run, int *kpi_unchanged)
{
    PGconn *c = step_connect(R, so);
    if (!c) return;
    px_kpi_params p = px_kpi_default_params();
    px_kpi_run_info info;
    px_err e = {0};
    int rc = px_retention_check_partial(c, "kpi compute", &e);
    if (rc == 0) rc = px_retention_check_features(c, "kpi compute", &e);
    if (rc == 0) rc = px_kpi_compute(c, &R->cfg, &p, &info, &e);
    if (rc != 0 && rc != PX_ENOTHING) {
        out_err(so, PX_EXIT_FAIL, &e);
        note_conn(c, so);
    } else {
        so->exit_code = rc == PX_ENOTHING ? PX_EXIT_NOTHING : PX_EXIT_OK;
        px_run_copy(so->msg, sizeof so->msg, info.summary); /* names what was computed crude, and why */
        snprintf(so->result, sizeof so->result, "{\"kpi_run\":%lld,\"unchanged\":%s}", info.run_id,
                 rc == PX_ENOTHING ? "true" : "false");
        *kpi_run = info.run_id;
        *kpi_unchanged = rc == PX_ENOTHING;
    }
    PQfinish(c);
}

/* The report of the latest KPI run (or of kpi_run when this run's kpi step named
 * one). Nothing to do when this run's KPI step stored nothing new and the last
 * report step wrote the same run and period to a file that is still there. */
static void step_report(runner *R, step_out *so, long long kpi_run, int kpi_unchanged)
{
    PGconn *c = step_connect(R, so);
    if (!c) return;
    px_err e = {0};
    char dir[4200];
    if (R->o.report_dir[0]) px_run_copy(dir, sizeof dir, R->o.report_dir);
    else snprintf(dir, sizeof dir, "%s/reports", R->cfg.home);
    if (kpi_run > 0 && kpi_unchanged) {
        char runs[32];
        snprintf(runs, sizeof runs, "%lld", kpi_run);
        const char *v[2] = {runs, R->o.period};
        PGresult *r = px_run_book(R->c, &e,
                           "SELECT result->>'html' FROM run.steps WHERE step = 'report' AND status = 'ok'"
                           " AND (result->>'kpi_run')::bigint = $1::bigint AND result->>'period_asked' = $2"
                           " ORDER BY finished_at DESC LIMIT 1", 2, v);
        if (r && PQntuples(r) == 1 && access(PQgetvalue(r, 0, 0), R_OK) == 0) {
            so->exit_code = PX_EXIT_NOTHING;
            snprintf(so->msg, sizeof so->msg, "KPI run %lld unchanged, its report is %s", kpi_run, PQgetvalue(r, 0, 0));
            PQclear(r);
            PQfinish(c);
            return;
        }
        PQclear(r);
        px_err_clear(&e);
    }
    if (px_mkdir_p(dir, 0755, &e) != 0) {
        out_err(so, PX_EXIT_FAIL, &e);
        PQfinish(c);
        return;
    }
    /* the period label is known after the call: write to a name per KPI run first */
    px_kpi_report_params p = px_kpi_report_default_params();
    p.period = R->o.period;
    p.run_id = kpi_run > 0 ? kpi_run : 0;
    char html[4400], json[4400];
    snprintf(html, sizeof html, "%s/report-%s-run%lld.html", dir, R->o.period, R->run_id);
    snprintf(json, sizeof json, "%s/report-%s-run%lld.json", dir, R->o.period, R->run_id);
    p.html_path = html;
    p.json_path = json;
    px_kpi_report_info info;
    int rc = px_retention_check_period(c, p.period, &e);
    if (rc == 0) rc = px_kpi_report(c, &p, &info, &e);
    if (rc != 0) {
        out_err(so, PX_EXIT_FAIL, &e);
        note_conn(c, so);
    } else {
        so->exit_code = PX_EXIT_OK;
        snprintf(so->msg, sizeof so->msg, "period %s of KPI run %lld: %d facilities, %d cells flagged worse, "
                 "%d better: %.1500s", info.period, info.run_id, info.units, info.flagged_worse, info.flagged_better, html);
        px_buf b = {0};
        px_buf_printf(&b, "{\"kpi_run\":%lld,\"period\":", info.run_id);
        px_buf_json_str(&b, info.period, strlen(info.period));
        px_buf_adds(&b, ",\"period_asked\":");
        px_buf_json_str(&b, R->o.period, strlen(R->o.period));
        px_buf_adds(&b, ",\"html\":");
        px_buf_json_str(&b, html, strlen(html));
        px_buf_adds(&b, ",\"json\":");
        px_buf_json_str(&b, json, strlen(json));
        px_buf_adds(&b, "}");
        if (b.data && b.len < sizeof so->result) px_run_copy(so->result, sizeof so->result, b.data);
        px_buf_release(&b);
    }
    PQfinish(c);
}

static void step_drift(runner *R, step_out *so)
{
    PGconn *c = step_connect(R, so);
    if (!c) return;
    px_drift_params p = px_drift_default_params();
    px_err e = {0};
    int alerts = 0;
    int rc = px_drift_check(c, &R->cfg, NULL, 0, &p, 0, stdout, &alerts, &e);
    fflush(stdout);
    if (rc == PX_ENOTHING) {
        so->exit_code = PX_EXIT_NOTHING;
        px_run_copy(so->msg, sizeof so->msg, e.msg[0] ? e.msg : "nothing new to check");
    } else if (rc != 0) {
        out_err(so, PX_EXIT_FAIL, &e);
        note_conn(c, so);
    } else {
        so->exit_code = PX_EXIT_OK;
        snprintf(so->msg, sizeof so->msg, "checked: %d alert%s raised (serve.drift_alerts)", alerts,
                 alerts == 1 ? "" : "s");
        snprintf(so->result, sizeof so->result, "{\"alerts\":%d}", alerts);
    }
    PQfinish(c);
}

/* ---- bookkeeping ------------------------------------------------------------ */

const char *px_run_status_of(int exit_code)
{
    switch (exit_code) {
    case PX_EXIT_OK: return "ok";
    case PX_EXIT_NOTHING: return "nothing";
    case PX_EXIT_GATES: return "gates";
    default: return "failed";
    }
}

/* Updates step seq of the run. exit_code < 0 and result NULL leave those unset. */
static int step_record(runner *R, int seq, const char *status, int attempts, int exit_code, const char *msg,
                       const char *result, int started, int finished, px_err *e)
{
    char run[32], sq[16], att[16], ec[16];
    snprintf(run, sizeof run, "%lld", R->run_id);
    snprintf(sq, sizeof sq, "%d", seq);
    snprintf(att, sizeof att, "%d", attempts);
    snprintf(ec, sizeof ec, "%d", exit_code);
    const char *v[9] = {run, sq, status, att, exit_code >= 0 ? ec : NULL, msg, result && *result ? result : NULL,
                        started ? "t" : "f", finished ? "t" : "f"};
    PGresult *r = px_run_book(R->c, e,
                       "UPDATE run.steps SET status = $3, attempts = $4::int, exit_code = $5::int, message = $6,"
                       " result = coalesce($7::jsonb, result),"
                       " started_at = CASE WHEN $8::bool THEN clock_timestamp() ELSE started_at END,"
                       " finished_at = CASE WHEN $9::bool THEN clock_timestamp() END"
                       " WHERE run_id = $1::bigint AND seq = $2::int",
                       9, v);
    if (!r) return PX_EDB;
    PQclear(r);
    return 0;
}

static void json_opt(px_buf *b, const char *key, const char *v, int *first)
{
    if (!v[0]) return;
    px_buf_printf(b, "%s\"%s\":", *first ? "" : ",", key);
    px_buf_json_str(b, v, strlen(v));
    *first = 0;
}

/* Creates the run and its step rows. */
int px_run_create(runner *R, long long resumes, px_err *e)
{
    px_buf b = {0}, st = {0};
    int first = 1;
    px_buf_adds(&b, "{");
    json_opt(&b, "source", R->o.source, &first);
    json_opt(&b, "format", R->o.format, &first);
    json_opt(&b, "as_of", R->o.as_of, &first);
    json_opt(&b, "future_dates", R->o.future, &first);
    json_opt(&b, "report_period", R->o.period, &first);
    json_opt(&b, "report_dir", R->o.report_dir, &first);
    if (R->o.max_reject_rate >= 0) px_buf_printf(&b, "%s\"max_reject_rate\":%.17g", first ? "" : ",", R->o.max_reject_rate);
    px_buf_printf(&b, "%s\"retries\":%d,\"backoff\":%d", R->o.max_reject_rate >= 0 || !first ? "," : "",
                  R->o.retries, R->o.backoff_s);
    if (R->o.hier_boot >= 0) px_buf_printf(&b, ",\"hier_boot\":%d", R->o.hier_boot);
    px_buf_adds(&b, "}");
    px_buf_adds(&st, "{");
    for (int k = 0, n = 0; k < ST__COUNT; k++)
        if (R->o.steps & (1u << k)) px_buf_printf(&st, "%s%s", n++ ? "," : "", px_run_step_names[k]);
    px_buf_adds(&st, "}");
    char pid[16], res[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(res, sizeof res, "%lld", resumes);
    int rc = PX_ENOMEM;
    if (b.data && st.data) {
        const char *v[4] = {st.data, b.data, pid, resumes > 0 ? res : NULL};
        PGresult *r = px_run_book(R->c, e,
                           "INSERT INTO run.runs (steps, options, runner_pid, resumes)"
                           " VALUES ($1::text[], $2::jsonb, $3::int, $4::bigint) RETURNING run_id", 4, v);
        if (r) {
            R->run_id = atoll(PQgetvalue(r, 0, 0));
            PQclear(r);
            char run[32];
            snprintf(run, sizeof run, "%lld", R->run_id);
            const char *w[2] = {run, st.data};
            r = px_run_book(R->c, e,
                     "INSERT INTO run.steps (run_id, seq, step)"
                     " SELECT $1::bigint, n, s FROM unnest($2::text[]) WITH ORDINALITY AS u(s, n)", 2, w);
            if (r) {
                PQclear(r);
                rc = 0;
                if (resumes > 0) {
                    const char *x[2] = {res, run};
                    r = px_run_book(R->c, e, "UPDATE run.runs SET resumed_by = $2::bigint WHERE run_id = $1::bigint", 2, x);
                    rc = r ? 0 : PX_EDB;
                    PQclear(r);
                }
            } else rc = PX_EDB;
        } else rc = PX_EDB;
    }
    px_buf_release(&b);
    px_buf_release(&st);
    return rc;
}

void px_run_finish(runner *R, const char *status, int code, const char *msg)
{
    char run[32], ec[16];
    snprintf(run, sizeof run, "%lld", R->run_id);
    snprintf(ec, sizeof ec, "%d", code);
    const char *v[4] = {run, status, ec, msg};
    px_err e = {0};
    PGresult *r = px_run_book(R->c, &e,
                       "UPDATE run.runs SET status = $2, exit_code = $3::int, message = $4, finished_at = clock_timestamp()"
                       " WHERE run_id = $1::bigint", 4, v);
    if (!r) px_err_print(&e);
    PQclear(r);
}

/* Runs one step with retries. Returns its final exit code. */
int px_run_step(runner *R, int seq, int k, long long *kpi_run, int *kpi_unchanged, char *final_msg, size_t fn)
{
    px_err e = {0};
    step_out so;
    int attempt = 0;
    for (;;) {
        attempt++;
        memset(&so, 0, sizeof so);
        char why[1024] = "";
        /* a lock held (or no database) before the step starts is waited out the same way */
        int pre = transient_cause(R, k, NULL, why, sizeof why);
        if (!pre) {
            if (step_record(R, seq, "running", attempt, -1, NULL, NULL, attempt == 1, 0, &e) != 0) {
                px_err_print(&e);
                px_err_clear(&e);
            }
            printf("run %lld: %s (attempt %d)\n", R->run_id, px_run_step_names[k], attempt);
            fflush(stdout);
            switch (k) {
            case ST_LOAD: step_load(R, &so); break;
            case ST_FEATURES: step_features(R, &so); break;
            case ST_RETRAIN: step_retrain(R, &so); break;
            case ST_KPI: step_kpi(R, &so, kpi_run, kpi_unchanged); break;
            case ST_REPORT: step_report(R, &so, *kpi_run, *kpi_unchanged); break;
            default: step_drift(R, &so); break;
            }
            if (so.exit_code != PX_EXIT_FAIL || !transient_cause(R, k, &so, why, sizeof why)) break;
        }
        if (attempt > R->o.retries) {
            if (pre) { /* the step never started: say why it failed */
                so.exit_code = PX_EXIT_FAIL;
                snprintf(so.msg, sizeof so.msg, "gave up after %d attempt%s: %s", attempt, attempt == 1 ? "" : "s", why);
            } else {
                size_t l = strlen(so.msg);
                snprintf(so.msg + l, sizeof so.msg - l, " (transient: %s; gave up after %d attempts)", why, attempt);
            }
            break;
        }
        long long wait = R->o.backoff_s;
        for (int i = 1; i < attempt && wait < MAX_BACKOFF_S; i++) wait *= 2;
        if (wait > MAX_BACKOFF_S) wait = MAX_BACKOFF_S;
        char msg[3200];
        snprintf(msg, sizeof msg, "attempt %d: %s%s%s; retry %d of %d in %lld s", attempt, why, so.msg[0] ? "; " : "",
                 so.msg, attempt, R->o.retries, wait);
        fprintf(stderr, "prognos run %lld: %s: %s\n", R->run_id, px_run_step_names[k], msg);
        if (step_record(R, seq, "retrying", attempt, so.msg[0] ? so.exit_code : -1, msg, NULL, attempt == 1, 0, &e) != 0) {
            px_err_print(&e); /* the database is away: the retry goes on, recorded when it is back */
            px_err_clear(&e);
        }
        sleep((unsigned)wait);
    }
    if (step_record(R, seq, px_run_status_of(so.exit_code), attempt, so.exit_code, so.msg, so.result, 0, 1, &e) != 0) {
        px_err_print(&e);
        so.exit_code = PX_EXIT_FAIL; /* a run that cannot be recorded cannot be resumed: fail it */
    }
    printf("run %lld: %s: %s: %s\n", R->run_id, px_run_step_names[k], px_run_status_of(so.exit_code), so.msg);
    fflush(stdout);
    px_run_copy(final_msg, fn, so.msg);
    return so.exit_code;
}

/* ---- resume ------------------------------------------------------------------ */

/* Fills the options not given on the command line from run id, and returns in
 * *from the first step that did not finish. 0, PX_ENOTHING (the run finished),
 * PX_ENOTFOUND, PX_ESTATE (already resumed, or still running), PX_EDB. */
int px_run_resume_load(runner *R, long long id, int *from_seq, px_err *e)
{
    char run[32];
    snprintf(run, sizeof run, "%lld", id);
    const char *v[1] = {run};
    PGresult *r = px_run_book(R->c, e,
                       "SELECT status, resumed_by, coalesce(options->>'source',''), coalesce(options->>'format',''),"
                       " coalesce(options->>'as_of',''), coalesce(options->>'future_dates',''),"
                       " coalesce(options->>'report_period',''), coalesce(options->>'report_dir',''),"
                       " coalesce(options->>'max_reject_rate','-1'), coalesce(options->>'retries','-1'),"
                       " coalesce(options->>'backoff','-1'),"
                       " coalesce(options->>'hier_boot','-1'),"
                       " (SELECT min(seq) FROM run.steps s WHERE s.run_id = r.run_id"
                       "   AND s.status NOT IN ('ok', 'nothing', 'gates')),"
                       " (SELECT string_agg(step, ',' ORDER BY seq) FROM run.steps s WHERE s.run_id = r.run_id"
                       "   AND seq >= (SELECT min(seq) FROM run.steps s2 WHERE s2.run_id = r.run_id"
                       "   AND s2.status NOT IN ('ok', 'nothing', 'gates')))"
                       " FROM run.runs r WHERE run_id = $1::bigint", 1, v);
    if (!r) return PX_EDB;
    int rc = 0;
    if (PQntuples(r) == 0) {
        rc = px_err_set(e, PX_ENOTFOUND, "there is no run %lld", id);
        px_err_hint(e, "'prognos run status' lists the runs");
    } else if (!PQgetisnull(r, 0, 1)) {
        rc = px_err_set(e, PX_ESTATE, "run %lld was resumed already, by run %s", id, PQgetvalue(r, 0, 1));
        px_err_hint(e, "resume the latest run of the chain: prognos run --resume %s (if it failed)", PQgetvalue(r, 0, 1));
    } else if (strcmp(PQgetvalue(r, 0, 0), "failed") != 0 && strcmp(PQgetvalue(r, 0, 0), "interrupted") != 0) {
        rc = px_err_set(e, PX_ENOTHING, "run %lld has status '%s': nothing to resume", id, PQgetvalue(r, 0, 0));
    } else if (PQgetisnull(r, 0, 12)) {
        rc = px_err_set(e, PX_ENOTHING, "every step of run %lld finished: nothing to resume", id);
    } else {
        run_opts *o = &R->o;
        if (!o->source[0]) px_run_copy(o->source, sizeof o->source, PQgetvalue(r, 0, 2));
        if (!o->format[0]) px_run_copy(o->format, sizeof o->format, PQgetvalue(r, 0, 3));
        if (!o->as_of[0]) px_run_copy(o->as_of, sizeof o->as_of, PQgetvalue(r, 0, 4));
        if (!o->future[0]) px_run_copy(o->future, sizeof o->future, PQgetvalue(r, 0, 5));
        if (!o->period[0]) px_run_copy(o->period, sizeof o->period, PQgetvalue(r, 0, 6));
        if (!o->report_dir[0]) px_run_copy(o->report_dir, sizeof o->report_dir, PQgetvalue(r, 0, 7));
        if (o->max_reject_rate < 0) o->max_reject_rate = atof(PQgetvalue(r, 0, 8));
        if (o->retries < 0) o->retries = atoi(PQgetvalue(r, 0, 9));
        if (o->backoff_s < 0) o->backoff_s = atoi(PQgetvalue(r, 0, 10));
        if (o->hier_boot < 0) o->hier_boot = atoi(PQgetvalue(r, 0, 11));
        *from_seq = atoi(PQgetvalue(r, 0, 12));
        if (px_run_parse_steps(PQgetvalue(r, 0, 13), &o->steps) != 0)
            rc = px_err_set(e, PX_ECORRUPT, "run %lld lists unknown steps '%s'", id, PQgetvalue(r, 0, 13));
    }
    PQclear(r);
    return rc;
}
