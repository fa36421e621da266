/* cmd_run.c: prognos run - the scheduler's chain (load, features, retrain, kpi,
 * report, drift) as steps with state in run.runs / run.steps (engine/sql/011_runs.sql),
 * retries with backoff for transient causes, --resume from the failed step, and
 * prognos run status. This file parses options, takes the runner lock (one prognos
 * run at a time: a session advisory lock) and reports; the steps, retries and
 * bookkeeping are in run.c. */
#include "engine/cli/run.h"
#include "models/models.h"
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: prognos run [--steps LIST] [--source PATH|URI] [--format synpuf|canonical|postgres]\n"
    "                   [--as-of DATE] [--future-dates reject|allow] [--max-reject-rate PCT]\n"
    "                   [--report-period P] [--report-dir DIR] [--retries N] [--backoff S]\n"
    "                   [--hier-boot N] [--json]\n"
    "       prognos run --resume RUN [options as above, to change them]\n"
    "       prognos run status [RUN] [--limit N] [--json]\n"
    "\n"
    "Runs the scheduler's chain as steps, in this order, each with the library code of its\n"
    "own command: load (etl load), features (features build), retrain (retrain --model all),\n"
    "kpi (kpi compute), report (kpi report), drift (drift check). The run and each step\n"
    "are recorded in PostgreSQL (run.runs, run.steps: step, start, end, status, attempts,\n"
    "exit code, message). A step that fails stops the chain; the steps after it stay\n"
    "pending. A step that has nothing new to do does not stop it.\n"
    "\n"
    "  --steps LIST        comma list of steps (default load,features,retrain,kpi,report,drift);\n"
    "                      run in the order above whatever the order given\n"
    "  --source, --format, --as-of, --future-dates, --max-reject-rate\n"
    "                      the load step's options, as for prognos etl load (--format\n"
    "                      default canonical; --source required when load is a step)\n"
    "  --report-period P   the report step's period, as for kpi report (default year: the\n"
    "                      latest complete year)\n"
    "  --report-dir DIR    where the report step writes report-<period>-kpirun<N>.html and\n"
    "                      .json (default $PROGNOS_HOME/reports)\n"
    "  --hier-boot N       the retrain step's bootstrap draws for the hierarchical models'\n"
    "                      intervals, as for prognos retrain (default 20; 0 = none)\n"
    "  --retries N         retries of a step that failed for a transient cause (default 3)\n"
    "  --backoff S         seconds before the first retry, doubled for each next one, at\n"
    "                      most 3600 (default 10)\n"
    "  --resume RUN        run the steps of a failed or interrupted run from the step that\n"
    "                      did not finish, with its options (options given here replace\n"
    "                      them: fix --source, say); recorded as a new run that names RUN\n"
    "  --json              print the run's summary as JSON at the end\n"
    "\n"
    "Transient causes, retried: the database cannot be reached (or the connection was\n"
    "lost during the step), and a lock the step needs is held by another session (a\n"
    "load, build or KPI run in progress). They are found by looking (a new connection,\n"
    "pg_locks), not by reading error text. While it waits a step is 'retrying' in\n"
    "run.steps, with the cause in its message. Any other failure is final.\n"
    "\n"
    "status: the latest runs (default 10) or one run, with their steps.\n"
    "\n"
    "Exit codes:\n"
    "  0  every step ran; at least one did something\n"
    "  1  a step failed (run status names it; fix and --resume RUN), or the run could\n"
    "     not be recorded\n"
    "  2  usage error\n"
    "  3  nothing to do: no step had anything new (or --resume of a run that finished)\n"
    "  4  every step ran but a model failed its quality gates (registered, not promoted;\n"
    "     as prognos retrain exits 4)\n";

/* ---- prognos run ------------------------------------------------------------ */

static int do_run(int argc, char **argv)
{
    runner R;
    memset(&R, 0, sizeof R);
    run_opts *o = &R.o;
    o->max_reject_rate = -1;
    o->retries = o->backoff_s = o->hier_boot = -1;
    long long resume = 0, n;
    int json = 0, steps_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            json = 1;
            continue;
        }
        if (!v) return px_cli_usage_error("run", "unknown or incomplete option '%s'", a);
        i++;
        if (strcmp(a, "--steps") == 0) {
            if (px_run_parse_steps(v, &o->steps) != 0)
                return px_cli_usage_error("run", "--steps '%s': a comma list of load, features, retrain, kpi, "
                                          "report, drift, each at most once", v);
            steps_given = 1;
        } else if (strcmp(a, "--source") == 0) {
            if (!*v || strlen(v) >= sizeof o->source) return px_cli_usage_error("run", "--source needs a path or URI");
            px_run_copy(o->source, sizeof o->source, v);
        } else if (strcmp(a, "--format") == 0) {
            if (strcmp(v, "synpuf") && strcmp(v, "canonical") && strcmp(v, "postgres"))
                return px_cli_usage_error("run", "unknown format '%s' (synpuf, canonical or postgres)", v);
            px_run_copy(o->format, sizeof o->format, v);
        } else if (strcmp(a, "--as-of") == 0) {
            int y, m, d;
            char tail;
            if (strlen(v) != 10 || sscanf(v, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || m < 1 || m > 12 || d < 1 || d > 31)
                return px_cli_usage_error("run", "--as-of '%s': a date YYYY-MM-DD", v);
            px_run_copy(o->as_of, sizeof o->as_of, v);
        } else if (strcmp(a, "--future-dates") == 0) {
            if (strcmp(v, "allow") && strcmp(v, "reject"))
                return px_cli_usage_error("run", "--future-dates must be reject or allow, not '%s'", v);
            px_run_copy(o->future, sizeof o->future, v);
        } else if (strcmp(a, "--max-reject-rate") == 0) {
            double pct;
            if (px_cli_double(v, &pct) != 0 || !(pct >= 0 && pct <= 100))
                return px_cli_usage_error("run", "--max-reject-rate needs a percentage 0-100, not '%s'", v);
            o->max_reject_rate = pct;
        } else if (strcmp(a, "--report-period") == 0) {
            if (!*v || strlen(v) >= sizeof o->period || strchr(v, '/') || strchr(v, ','))
                return px_cli_usage_error("run", "--report-period '%s': a period as for kpi report", v);
            px_run_copy(o->period, sizeof o->period, v);
        } else if (strcmp(a, "--report-dir") == 0) {
            if (!*v || strlen(v) >= sizeof o->report_dir - 64) return px_cli_usage_error("run", "--report-dir needs a directory");
            px_run_copy(o->report_dir, sizeof o->report_dir, v);
        } else if (strcmp(a, "--retries") == 0) {
            if (px_cli_ll(v, 0, 100, &n) != 0) return px_cli_usage_error("run", "--retries '%s': a count 0-100", v);
            o->retries = (int)n;
        } else if (strcmp(a, "--backoff") == 0) {
            if (px_cli_ll(v, 0, MAX_BACKOFF_S, &n) != 0)
                return px_cli_usage_error("run", "--backoff '%s': seconds, 0-%d", v, MAX_BACKOFF_S);
            o->backoff_s = (int)n;
        } else if (strcmp(a, "--hier-boot") == 0) {
            if (px_cli_ll(v, 0, 100000, &n) != 0)
                return px_cli_usage_error("run", "--hier-boot '%s': a whole number of draws from 0 to 100000", v);
            o->hier_boot = (int)n;
        } else if (strcmp(a, "--resume") == 0) {
            if (px_cli_ll(v, 1, (long long)9e18, &resume) != 0) return px_cli_usage_error("run", "--resume '%s': a run id", v);
        } else {
            return px_cli_usage_error("run", "unknown or incomplete option '%s'", a);
        }
    }
    if (resume && steps_given)
        return px_cli_usage_error("run", "--resume takes the steps of the run it resumes: drop --steps");
    if (!resume) {
        if (!steps_given) o->steps = (1u << ST__COUNT) - 1;
        if ((o->steps & (1u << ST_LOAD)) && !o->source[0])
            return px_cli_usage_error("run", "the load step needs --source (or leave load out of --steps)");
        if (!(o->steps & (1u << ST_LOAD)) && (o->source[0] || o->format[0]))
            return px_cli_usage_error("run", "--source and --format are the load step's: add load to --steps");
    }

    px_err e = {0};
    if (px_config_load(&R.cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(R.cfg.home);
    /* the runner lock; the database itself may be away: both are waited out */
    int rc, tries = 0, retries = o->retries >= 0 ? o->retries : 3, backoff = o->backoff_s >= 0 ? o->backoff_s : 10;
    while ((rc = px_run_connect(&R, &e)) != 0) {
        if (rc != 1 && e.code != PX_EDB) return px_cli_fail(&e); /* not a database to wait for */
        if (tries++ >= retries) {
            if (rc == 1) {
                px_err_set(&e, PX_ESTATE, "another prognos run is in progress");
                px_err_hint(&e, "'prognos run status' shows it");
            }
            if (R.c) PQfinish(R.c);
            return px_cli_fail(&e);
        }
        long long wait = backoff;
        for (int i = 1; i < tries && wait < MAX_BACKOFF_S; i++) wait *= 2;
        if (wait > MAX_BACKOFF_S) wait = MAX_BACKOFF_S;
        fprintf(stderr, "prognos run: %s; retry %d of %d in %lld s\n",
                rc == 1 ? "another prognos run is in progress" : e.msg, tries, retries, wait);
        px_err_clear(&e);
        sleep((unsigned)wait);
    }
    /* we hold the runner lock: a run still marked running has lost its runner */
    PGresult *r = px_run_book(R.c, &e,
                       "WITH d AS (UPDATE run.runs SET status = 'interrupted', finished_at = clock_timestamp(),"
                       " message = 'the runner ended without finishing (killed?): resume with --resume'"
                       " WHERE status = 'running' RETURNING run_id)"
                       " UPDATE run.steps s SET status = 'interrupted', finished_at = clock_timestamp()"
                       " FROM d WHERE s.run_id = d.run_id AND s.status IN ('running', 'retrying')", 0, NULL);
    if (!r) goto fail;
    PQclear(r);

    int from_seq = 1;
    if (resume) {
        if ((rc = px_run_resume_load(&R, resume, &from_seq, &e)) != 0) goto fail;
        if ((o->steps & (1u << ST_LOAD)) && !o->source[0]) {
            px_err_set(&e, PX_EINVAL, "run %lld had no --source for its load step", resume);
            goto fail;
        }
    }
    if (!o->format[0] && (o->steps & (1u << ST_LOAD))) px_run_copy(o->format, sizeof o->format, "canonical");
    if (!o->period[0] && (o->steps & (1u << ST_REPORT))) px_run_copy(o->period, sizeof o->period, "year");
    if (o->retries < 0) o->retries = 3;
    if (o->backoff_s < 0) o->backoff_s = 10;
    if (px_run_create(&R, resume, &e) != 0) goto fail;
    printf("run %lld: started\n", R.run_id);
    if (resume) printf("run %lld: resumes run %lld from its step %d\n", R.run_id, resume, from_seq);

    int seq = 0, failed = 0, gates = 0, did = 0;
    long long kpi_run = 0;
    int kpi_unchanged = 0;
    char msg[2048] = "", run_msg[2300] = "";
    for (int k = 0; k < ST__COUNT; k++) {
        if (!(o->steps & (1u << k))) continue;
        seq++;
        int code = px_run_step(&R, seq, k, &kpi_run, &kpi_unchanged, msg, sizeof msg);
        if (code == PX_EXIT_FAIL) {
            failed = 1;
            snprintf(run_msg, sizeof run_msg, "step %s failed: %s", px_run_step_names[k], msg);
            break;
        }
        gates |= code == PX_EXIT_GATES;
        did |= code != PX_EXIT_NOTHING;
    }
    int code = failed ? PX_EXIT_FAIL : gates ? PX_EXIT_GATES : did ? PX_EXIT_OK : PX_EXIT_NOTHING;
    if (!failed)
        snprintf(run_msg, sizeof run_msg, "%s", gates ? "a model failed its quality gates (registered, not promoted)"
                                               : did ? "every step ran" : "nothing new: no step had anything to do");
    px_run_finish(&R, failed ? "failed" : px_run_status_of(code), code, run_msg);
    if (json) {
        px_buf b = {0};
        px_buf_printf(&b, "{\"run_id\":%lld,\"status\":\"%s\",\"exit_code\":%d,\"message\":", R.run_id,
                      failed ? "failed" : px_run_status_of(code), code);
        px_buf_json_str(&b, run_msg, strlen(run_msg));
        px_buf_adds(&b, "}");
        if (b.data) printf("%s\n", b.data);
        px_buf_release(&b);
    } else {
        printf("run %lld: %s (exit %d): %s\n", R.run_id, failed ? "failed" : px_run_status_of(code), code, run_msg);
        if (failed) printf("fix the cause, then: prognos run --resume %lld\n", R.run_id);
    }
    PQfinish(R.c);
    return code;
fail:
    if (R.c) PQfinish(R.c);
    return px_cli_fail(&e); /* PX_ENOTHING (--resume of a finished run): exit 3 */
}

/* ---- prognos run status ------------------------------------------------------- */

static const char status_json_sql[] =
    "SELECT coalesce(json_agg(j ORDER BY run_id DESC), '[]') FROM ("
    " SELECT r.run_id, json_build_object('run_id', r.run_id, 'status', r.status, 'exit_code', r.exit_code,"
    "  'message', r.message, 'steps_requested', r.steps, 'options', r.options, 'resumes', r.resumes,"
    "  'resumed_by', r.resumed_by, 'runner_pid', r.runner_pid,"
    "  'started_at', to_char(r.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    "  'finished_at', to_char(r.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    "  'steps', (SELECT coalesce(json_agg(json_build_object('seq', s.seq, 'step', s.step, 'status', s.status,"
    "     'attempts', s.attempts, 'exit_code', s.exit_code, 'message', s.message, 'result', s.result,"
    "     'started_at', to_char(s.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    "     'finished_at', to_char(s.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))"
    "     ORDER BY s.seq), '[]') FROM run.steps s WHERE s.run_id = r.run_id)) AS j"
    " FROM run.runs r WHERE ($1::bigint IS NULL OR r.run_id = $1::bigint) ORDER BY r.run_id DESC LIMIT $2::int) x";

static const char status_text_sql[] =
    "SELECT r.run_id, r.status, coalesce(r.exit_code::text, '-'), to_char(r.started_at AT TIME ZONE 'UTC',"
    " 'YYYY-MM-DD HH24:MI:SS'), coalesce(to_char(r.finished_at AT TIME ZONE 'UTC', 'HH24:MI:SS'), '-'),"
    " coalesce(r.message, ''), coalesce(' (resumes run ' || r.resumes || ')', '')"
    " || coalesce(' (resumed by run ' || r.resumed_by || ')', ''),"
    " s.seq, s.step, s.status, s.attempts, coalesce(s.exit_code::text, '-'),"
    " coalesce(round(extract(epoch FROM s.finished_at - s.started_at)::numeric, 1)::text, '-'), coalesce(s.message, '')"
    " FROM (SELECT * FROM run.runs WHERE ($1::bigint IS NULL OR run_id = $1::bigint)"
    "       ORDER BY run_id DESC LIMIT $2::int) r"
    " JOIN run.steps s USING (run_id) ORDER BY r.run_id DESC, s.seq";

static int do_status(int argc, char **argv)
{
    int json = 0;
    long long id = 0, limit = 10;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
            if (px_cli_ll(argv[++i], 1, 1000000, &limit) != 0)
                return px_cli_usage_error("run", "--limit '%s': a count 1-1000000", argv[i]);
        } else if (argv[i][0] != '-' && !id) {
            if (px_cli_ll(argv[i], 1, (long long)9e18, &id) != 0)
                return px_cli_usage_error("run", "status: '%s' is not a run id", argv[i]);
        } else return px_cli_usage_error("run", "status: unknown or incomplete option '%s'", argv[i]);
    }
    px_config cfg;
    px_err e = {0};
    PGconn *c = px_cli_connect(&cfg, 1, &e); /* reads only: never creates a warehouse */
    if (!c) return px_cli_fail(&e);
    char ids[32], lim[32];
    snprintf(ids, sizeof ids, "%lld", id);
    snprintf(lim, sizeof lim, "%lld", limit);
    const char *v[2] = {id ? ids : NULL, lim};
    int code = PX_EXIT_OK;
    PGresult *r = px_run_book(c, &e, json ? status_json_sql : status_text_sql, 2, v);
    if (!r) {
        code = px_cli_fail(&e);
    } else if (json) {
        if (id && strcmp(PQgetvalue(r, 0, 0), "[]") == 0) {
            px_err_set(&e, PX_ENOTFOUND, "there is no run %lld", id);
            code = px_cli_fail(&e);
        } else printf("%s\n", PQgetvalue(r, 0, 0));
    } else if (PQntuples(r) == 0) {
        if (id) {
            px_err_set(&e, PX_ENOTFOUND, "there is no run %lld", id);
            code = px_cli_fail(&e);
        } else printf("no runs yet; see 'prognos run --help'\n");
    } else {
        const char *last = "";
        for (int i = 0; i < PQntuples(r); i++) {
            if (strcmp(last, PQgetvalue(r, i, 0)) != 0) {
                last = PQgetvalue(r, i, 0);
                printf("%srun %s: %s, exit %s, %s - %s UTC%s\n", i ? "\n" : "", last, PQgetvalue(r, i, 1),
                       PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 6));
                if (PQgetvalue(r, i, 5)[0]) printf("  %s\n", PQgetvalue(r, i, 5));
            }
            printf("  %s. %-9s %-11s attempts %s, exit %s, %s s  %s\n", PQgetvalue(r, i, 7), PQgetvalue(r, i, 8),
                   PQgetvalue(r, i, 9), PQgetvalue(r, i, 10), PQgetvalue(r, i, 11), PQgetvalue(r, i, 12),
                   PQgetvalue(r, i, 13));
        }
    }
    PQclear(r);
    PQfinish(c);
    return code;
}

int cmd_run(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    if (argc >= 2 && strcmp(argv[1], "status") == 0) return do_status(argc, argv);
    return do_run(argc, argv);
}
