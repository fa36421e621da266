/* run.h: the pipeline runner behind `prognos run` (run.c), shared with its command
 * file (cmd_run.c). Internal to engine/cli: the runner calls the registry, kpi and
 * serve libraries, which engine itself must not depend on. State lives in run.runs /
 * run.steps (engine/sql/011_runs.sql). */
#ifndef PROGNOS_CLI_RUN_H
#define PROGNOS_CLI_RUN_H

#include "engine/cli/cli.h"
#include <libpq-fe.h>
#include <stdio.h>

enum { ST_LOAD, ST_FEATURES, ST_RETRAIN, ST_KPI, ST_REPORT, ST_DRIFT, ST__COUNT };
extern const char *const px_run_step_names[ST__COUNT];
#define RUNNER_LOCK PX_LOCK_RUNNER /* one prognos run at a time (session lock) */
#define MAX_BACKOFF_S 3600

/* The options of a run: what is stored in run.runs.options. Empty strings and -1
 * mean "not given" (defaults, or on --resume the resumed run's value). */
typedef struct run_opts {
    unsigned steps; /* bit per ST_* */
    char source[4096], format[16], as_of[16], future[8], period[32], report_dir[4096];
    double max_reject_rate; /* < 0: not given */
    int retries, backoff_s; /* -1: not given */
    int hier_boot;          /* the retrain step's --hier-boot; -1: not given (retrain's default) */
} run_opts;

typedef struct runner {
    px_config cfg;
    PGconn *c; /* bookkeeping connection, holds RUNNER_LOCK */
    run_opts o;
    long long run_id;
} runner;

/* What one attempt of a step gave. */
typedef struct step_out {
    int exit_code;   /* the step's own command's code: 0, 1, 3, 4 */
    char msg[2048];
    char result[512]; /* JSON object or "" */
    int conn_lost;   /* the step's own connection broke: a transient cause */
} step_out;

static inline void px_run_copy(char *dst, size_t n, const char *s) { snprintf(dst, n, "%s", s ? s : ""); }

/* Runs a bookkeeping statement with text parameters (NULL = SQL NULL). Returns the
 * result (caller clears) or NULL with e set. */
PGresult *px_run_book(PGconn *c, px_err *e, const char *sql, int n, const char *const *v);
/* Parses a comma list of step names into a bit set; -1 on an unknown or repeated name. */
int px_run_parse_steps(const char *s, unsigned *out);
/* (Re)connects R's bookkeeping connection and takes the runner lock: 0, 1 when another
 * runner holds it, or a negative error (e set). */
int px_run_connect(runner *R, px_err *e);
/* Creates the run (options from R->o) and its step rows; sets R->run_id. */
int px_run_create(runner *R, long long resumes, px_err *e);
/* Runs step k (position seq) with retries; returns its exit code (0, 1, 3, 4) and its
 * message in final_msg. kpi_run / kpi_unchanged carry the kpi step's run to the report. */
int px_run_step(runner *R, int seq, int k, long long *kpi_run, int *kpi_unchanged, char *final_msg, size_t fn);
/* Records the run's end. */
void px_run_finish(runner *R, const char *status, int code, const char *msg);
/* Fills the options not given from run id; *from_seq: its first unfinished step. 0,
 * PX_ENOTHING (the run finished), PX_ENOTFOUND, PX_ESTATE (resumed already), PX_EDB. */
int px_run_resume_load(runner *R, long long id, int *from_seq, px_err *e);
/* "ok", "nothing", "gates" or "failed" for a step's exit code. */
const char *px_run_status_of(int exit_code);

#endif
