/* engine.h: the core every other Prognos library stands on.
 *
 * Configuration and home directory, errors, logging, PostgreSQL access (the
 * embedded server, migrations, COPY streaming), the ETL front stage and the
 * synthetic data generator. Library calls return 0 or a negative PX_E* code
 * and fill a caller-supplied px_err; they never exit() or print to stdout. */
#ifndef PROGNOS_ENGINE_H
#define PROGNOS_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* PX_VERSION ("0.1.0") comes from CMake's project(VERSION) (CMakeLists.txt),
 * defined for engine and everything that links it. */
#ifndef PX_VERSION
#error "PX_VERSION is defined by the build (project(VERSION) in CMakeLists.txt)"
#endif

/* Every PostgreSQL advisory lock id prognos takes, in one place: none may collide,
 * and `prognos run` looks for their holders in pg_locks (engine/cli/run.c). */
enum px_lock_id {
    PX_LOCK_MIGRATE = 7070001,        /* engine/db.c: migrations (session lock) */
    PX_LOCK_ETL = 7070002,            /* engine/etl.c: one load at a time (transaction lock) */
    PX_LOCK_REGISTRY_CLASS = 7070003, /* registry: the class of a per-model lock; the second key is
                                       * hashtext(model name) (transaction lock) */
    PX_LOCK_KPI = 7070005,            /* kpi: one KPI run at a time (transaction lock) */
    PX_LOCK_FEATURES = 7070010,       /* features/build.c: one build at a time (session lock) */
    PX_LOCK_RUNNER = 7070020          /* engine/cli/run.c: one `prognos run` at a time (session lock) */
};

/* ---- errors ------------------------------------------------------------ */

enum {
    PX_OK = 0,
    PX_EINVAL = -1,   /* bad input or usage */
    PX_EIO = -2,      /* file or process error */
    PX_EDB = -3,      /* database error */
    PX_ENOMEM = -4,   /* out of memory */
    PX_ENOTFOUND = -5,
    PX_ESTATE = -6,   /* wrong state (server not running, not initialised) */
    PX_ENOTHING = -7, /* nothing to do: not an error for a scheduler */
    PX_ECORRUPT = -8, /* data failed an integrity check */
    PX_EREJECTS = -9  /* an ETL batch rejected more rows than allowed: rolled back */
};

/* Filled on failure, untouched on success. msg: short primary message,
 * lower-case, what failed first; detail and hint may be empty. */
typedef struct px_err {
    int code;
    char msg[512];
    char detail[1024];
    char hint[512];
} px_err;

/* Sets e (if not NULL) and returns code, so callers can write
 * `return px_err_set(e, PX_EIO, "cannot open '%s'", path);` */
int px_err_set(px_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void px_err_detail(px_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_err_hint(px_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_err_clear(px_err *e);
/* Wraps an error that is already set: the new message becomes msg, the old
 * message (and its detail) move into detail as "cause: ...", the hint is kept
 * unless a new one is given later. For a caller that adds what it was doing to
 * a failure from below (a query, a file) without throwing away PostgreSQL's or
 * the OS's reason. Returns e->code (or code when e is NULL or was not set). */
int px_err_wrap(px_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prints "prognos: error: msg" plus detail and hint lines to stderr. */
void px_err_print(const px_err *e);

/* ---- logging ----------------------------------------------------------- */

/* Log lines go to $PROGNOS_HOME/log/prognos.log once px_log_open() succeeded, and to
 * stderr only at or above the level a command sets (default: never).
 * Never log identifiers: only pseudonyms and counts. */
typedef enum { PX_LOG_DEBUG, PX_LOG_INFO, PX_LOG_WARN, PX_LOG_ERROR } px_log_level;
void px_log_open(const char *home);
void px_log_set_stderr_level(px_log_level min);
void px_log(px_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_log_close(void);

/* ---- configuration ----------------------------------------------------- */

/* Resolved configuration, from the environment:
 *   PROGNOS_HOME      home directory (default ./var), made absolute
 *   PROGNOS_DB        libpq URI/conninfo of an external server; empty = embedded
 *   PROGNOS_KEY_FILE  pseudonymization key (default $PROGNOS_HOME/secret.key)
 *   PROGNOS_PG_BIN    PostgreSQL binaries (default: pg_config --bindir, then
 *                     /usr/lib/postgresql/15/bin)
 *   PROGNOS_PG_USER   when root, the unprivileged user that runs the server
 *                     (default postgres) */
typedef struct px_config {
    char home[4096];
    char db_url[4096];   /* PROGNOS_DB, or "" */
    char key_file[4096];
    char pg_bin[4096];
    char pg_user[64];
    int external;        /* 1 when PROGNOS_DB is set */
} px_config;

int px_config_load(px_config *cfg, px_err *e);

/* ---- embedded PostgreSQL ----------------------------------------------- */

/* Layout under home: pg/data (cluster), pg/run (socket dir, mode 0700),
 * pg/server.log, secret.key (0600), log/. The server listens on the Unix
 * socket only (listen_addresses = ''); local connections use trust auth and
 * are confined to the socket directory's owner (and root). */
int px_pg_init(const px_config *cfg, px_err *e);   /* initdb + key + start + migrate */
int px_pg_start(const px_config *cfg, px_err *e);  /* no-op if running */
int px_pg_stop(const px_config *cfg, px_err *e);
/* Returns 1 running, 0 stopped (or not initialised), <0 on error. */
int px_pg_status(const px_config *cfg, char *info, size_t infolen, px_err *e);
/* Writes the libpq URI of the warehouse database (embedded or PROGNOS_DB). */
int px_pg_url(const px_config *cfg, char *buf, size_t len, px_err *e);
int px_pg_initialized(const px_config *cfg);

/* ---- database access --------------------------------------------------- */

typedef struct pg_conn PGconn;
/* Connects to the warehouse; for the embedded server, initialises and starts
 * it when needed and applies pending migrations. Caller closes with PQfinish. */
PGconn *px_db_connect(const px_config *cfg, px_err *e);
/* For commands that only read: like px_db_connect (an initialised embedded
 * server that is stopped is started, migrations are applied), but a home that
 * holds no warehouse is an error (PX_ESTATE, with a hint), never initialised. */
PGconn *px_db_open(const px_config *cfg, px_err *e);
/* 0 when cfg names an existing warehouse (embedded and initialised, or
 * external); else PX_ESTATE with e set. Creates nothing. */
int px_db_require(const px_config *cfg, px_err *e);
/* Connects to an arbitrary libpq URI (the postgres ETL source). */
PGconn *px_db_connect_url(const char *url, px_err *e);
/* Runs SQL that returns no rows (may hold several statements). */
int px_db_exec(PGconn *c, px_err *e, const char *sql);
int px_db_execf(PGconn *c, px_err *e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Runs a query returning one value; copies it into out ("" for NULL). */
int px_db_scalar(PGconn *c, px_err *e, char *out, size_t outlen, const char *sql);
/* The one set of query helpers every folder uses (issue 13). Each fills e
 * on failure with what as the message and PostgreSQL's own words in the
 * detail (primary message, then the server's DETAIL) and the server's HINT
 * as the hint, and returns PX_EDB. */
typedef struct pg_result PGresult;
/* Fills e from a failed result r (or, when r is NULL, from the connection's
 * last error); returns PX_EDB. */
int px_db_fail(px_err *e, PGconn *c, const PGresult *r, const char *what);
/* Runs one statement with text parameters ($1..$n; a NULL pointer is SQL
 * NULL). Success is COMMAND_OK or TUPLES_OK; on success *out (when out is not
 * NULL) receives the result, which the caller PQclear()s. */
int px_db_query(PGconn *c, px_err *e, const char *what, PGresult **out, const char *sql, int nparams,
                const char *const *params);
/* Runs a query for one value: *out receives a malloc'd copy of row 0, column
 * 0, or NULL when the query returned no row or SQL NULL (caller frees). */
int px_db_value(PGconn *c, px_err *e, const char *what, char **out, const char *sql, int nparams,
                const char *const *params);
/* The last two steps of a write transaction: runs sql (its audit record, with
 * parameters; failure message what), then COMMIT (failure message
 * commit_what), and clears *in_tx once committed. Returns 0 or PX_EDB; on
 * failure the caller still holds the open transaction and rolls it back. */
int px_db_audit_commit(PGconn *c, px_err *e, const char *what, const char *sql, int nparams,
                       const char *const *params, const char *commit_what, int *in_tx);

/* The SQL text of the first embedded migration that contains needle, or NULL
 * (static storage): for code that must read a definition the schema holds
 * (features/fhir.c reads the comorbidity map of features.comorbidity_map). */
const char *px_db_migration_containing(const char *needle);

/* Applies pending migrations; *applied receives how many. */
int px_db_migrate(PGconn *c, int *applied, px_err *e);

/* ---- retention (retention.c, migration 016) ----------------------------- */

/* "7y" / "18m" / "400d" as a PostgreSQL interval ("7 years") in out. 0 or PX_EINVAL. */
int px_retention_parse_age(const char *s, char *out, size_t outlen, px_err *e);
/* Sets the policy of one fact table (fact_encounter, fact_diagnosis,
 * fact_procedure) or of all: partitions whose period ended more than older_than
 * ("7y") ago are detached, dropped or archived by the next apply. Installs
 * pg_partman when missing (needs a superuser) and configures it. 0 or PX_E*. */
int px_retention_set(PGconn *c, const char *table, const char *older_than, const char *action, px_err *e);

typedef struct px_retention_item {
    char table[32];           /* fact_encounter ... */
    char partition[64];       /* fact_encounter_p2015 */
    char period_start[16];    /* first day held, YYYY-MM-DD */
    char period_end[16];      /* first day after */
    char action[8];           /* detach | drop | archive */
    char archive_file[4200];  /* archive only: the gzip'd CSV */
    char archive_sha256[65];
    long long archive_rows, archive_bytes;
} px_retention_item;
typedef struct px_retention_result {
    px_retention_item *items; /* n items; freed by px_retention_result_release */
    int n;
    int removed;              /* partitions pg_partman removed in this run */
    int archived;             /* archives written (this run's and any left by an interrupted run) */
} px_retention_result;
/* Applies every policy with pg_partman's drop_partition_time in one
 * transaction (each removed partition recorded in wh.retention_removed and
 * audited), then writes each partition waiting for its archive to
 * archive_dir/<partition>.csv.gz and drops it. On a distributed warehouse,
 * pg_partman's rule on every shard with two-phase commit (gids pxr_*, resolved
 * by px_shards_recover; migration 020). 0 or PX_E*; r is filled either way with
 * what was done, release it. */
int px_retention_apply(PGconn *c, const char *archive_dir, px_retention_result *r, px_err *e);
void px_retention_result_release(px_retention_result *r);
/* Refusals (PX_ESTATE with a message naming the removed periods, or PX_EDB):
 * _check: [from, to) (YYYY-MM-DD) overlaps a removed period; _check_period: a
 * KPI period (2023, 2023-Q2, 2023-06; all and kinds pass) does; _check_partial:
 * some stay still in wh.fact_encounter lost its diagnoses or procedures. what
 * names the request in the message ("KPI period 2015"). */
int px_retention_check(PGconn *c, const char *from, const char *to, const char *what, px_err *e);
int px_retention_check_period(PGconn *c, const char *period, px_err *e);
int px_retention_check_partial(PGconn *c, const char *what, px_err *e);
/* _check_features: a feature table still holds stays of a removed period (built
 * before the removal): KPIs from it would report that period. */
int px_retention_check_features(PGconn *c, const char *what, px_err *e);

/* ---- shards (shards.c, migration 017) ----------------------------------- */

/* Registers a shard: a PostgreSQL server (libpq URI or conninfo) that gets empty
 * tables in its schema px_shard, a foreign server px_shard_<id> and a user mapping
 * here (postgres_fdw, installed when missing; needs a superuser), and a row of
 * wh.shards. *shard_id receives its number. Refused once the fact tables are
 * distributed. 0 or PX_E*. */
int px_shards_add(PGconn *c, const char *uri, int *shard_id, px_err *e);
typedef struct px_shards_result {
    int shards;          /* shards the rows went to */
    long long rows[3];   /* stays, diagnoses, procedures moved */
} px_shards_result;
/* Makes wh.fact_encounter, fact_diagnosis and fact_procedure PARTITION BY HASH
 * (patient_id) tables whose partitions are foreign tables on the shards, moving
 * every row there, in one transaction. PX_ENOTHING when already distributed. */
int px_shards_distribute(PGconn *c, px_shards_result *r, px_err *e);
/* A connection to the shard behind foreign server `server` (its libpq options,
 * and the user mapping's user and password), or NULL with e set. */
PGconn *px_shards_connect(PGconn *c, const char *server, px_err *e);
typedef struct px_shards_recovery {
    int shards;          /* shards looked at */
    int committed;       /* in-doubt prepared transactions committed */
    int rolled_back;     /* and rolled back */
} px_shards_recovery;
/* Resolves the prepared transactions px_<batch>_<shard> that a killed load left
 * on the shards: COMMIT PREPARED when etl.batches here records the batch as
 * loaded, else ROLLBACK PREPARED. locked: 1, the caller holds the ETL lock in
 * an open transaction (the loader); 0, this takes it in a transaction of its own,
 * waiting for a running load; -1, the same without waiting (rec->shards = -1
 * when a load runs: it resolves them itself). Nothing (0) unless the fact tables
 * are distributed. 0 or PX_E*. */
int px_shards_recover(PGconn *c, int locked, px_shards_recovery *rec, px_err *e);
/* For a transaction that reads the fact tables (the feature build, the marts;
 * KPI code may call it too): on a distributed warehouse, SET LOCAL
 * enable_partitionwise_aggregate and enable_partitionwise_join on, so that
 * aggregates grouped by patient_id (the hash key) are pushed whole to the shards
 * (postgres_fdw; PostgreSQL 15 pushes no partial aggregate: README, Scale-out).
 * Nothing on a single node. Call inside the transaction. 0 or PX_EDB. */
int px_shards_tune(PGconn *c, px_err *e);
/* SQL that aggregates a fact table on each shard and combines the results here
 * (for aggregates not grouped by the hash key, which PostgreSQL 15 does not push
 * to the shards through the partitioned table): appends to out the UNION ALL of
 * `branch` with every "@REL@" replaced by one relation holding part of
 * wh.<table> ("fact_encounter", "fact_diagnosis", "fact_procedure"): on a
 * distributed warehouse each foreign partition (one per shard; postgres_fdw runs
 * a query over a single foreign table whole on its shard, GROUP BY included),
 * else wh.<table> itself, once. The caller combines the branches (sums of
 * counts and sums, min of mins...). 0, PX_EINVAL (unknown table) or PX_EDB. */
struct px_buf;
int px_shards_union(PGconn *c, const char *table, const char *branch, struct px_buf *out, px_err *e);

/* ---- pseudonymization -------------------------------------------------- */

/* HMAC-SHA256 under the installation's secret key, truncated to 128 bits and
 * written as 32 lower-case hex digits (the warehouse stores them as uuid).
 * Each identifier kind is a separate domain, so an SSN and an MRN with the same
 * digits get unrelated pseudonyms. Plain SHA-256 would not do: the 10^9 SSNs
 * are enumerated in minutes; without the key the HMAC cannot be. */
typedef enum {
    PX_ID_PATIENT, PX_ID_ENCOUNTER, PX_ID_SSN, PX_ID_MRN, PX_ID_NAME,
    PX_ID_PHONE, PX_ID_EMAIL, PX_ID__COUNT
} px_id_kind;

typedef struct px_pseudo px_pseudo;  /* opaque; owns the key */
/* Creates the key file (32 random bytes, hex, mode 0600) if absent. */
int px_pseudo_keygen(const char *path, px_err *e);
/* Loads the key; refuses a key file readable by group or others. Caller frees. */
px_pseudo *px_pseudo_load(const char *path, px_err *e);
void px_pseudo_free(px_pseudo *p);
/* out must hold 33 bytes. Identifiers are trimmed; names and emails are
 * case-folded, phones reduced to digits, SSNs to digits, before hashing. */
void px_pseudo_id(const px_pseudo *p, px_id_kind kind, const char *value, size_t len, char out[33]);

/* ---- ETL --------------------------------------------------------------- */

typedef enum { PX_FMT_SYNPUF, PX_FMT_CANONICAL, PX_FMT_POSTGRES, PX_FMT_FHIR } px_etl_format;

/* A load's progress, for whoever shows it (the CLI draws a bar on a terminal):
 * the library never writes to stderr itself. phase: "loading" with pct 0..100 of
 * the batch's input bytes read; what the server is doing now ("merging",
 * "indexing") with pct -1; "done" when the files are loaded (clear the line);
 * "failed" when the load stopped (end the line). file: the input being read, ""
 * when none. Called on the loading thread. */
typedef void (*px_etl_progress_fn)(void *arg, const char *phase, const char *file, int pct);

typedef struct px_etl_params {
    px_etl_format format;
    const char *source;   /* directory (synpuf, canonical, fhir) or libpq URI (postgres) */
    px_etl_progress_fn on_progress; /* NULL: no progress reports */
    void *progress_arg;   /* passed to on_progress */
    const char *today;    /* "YYYY-MM-DD" for the future-date rule; NULL = today */
    int force;            /* load inputs even if loaded before (facts then come back as
                           * duplicate_key; rows rejected for a missing reference get a retry) */
    int allow_future;     /* 1: no future-date rule and no age rule against today (extracts
                           * whose dates are shifted per patient); ages at admission still checked */
    double max_reject_rate; /* percent of rows read, 0-100 (default 5): a batch that rejects more,
                           * duplicate_key rows aside, is rolled back (PX_EREJECTS) */
    const char *code_map; /* fhir: a CSV crosswalk (system, code, target_system, target_code) for
                           * Conditions and Procedures coded in other systems than ICD; NULL = none */
} px_etl_params;

px_etl_params px_etl_default_params(void);

typedef struct px_etl_result {
    long long batch_id;   /* 0 when nothing was loaded */
    long long rows_read, rows_loaded, rows_rejected;
    int files_loaded, files_skipped;
    char notes[1024];     /* warnings for the operator, one a line ("" if none): columns ignored */
    long long rows_skipped; /* fhir: resources of other types or not of an inpatient stay (counted
                           * in rows_read; rows_read = rows_loaded + rows_rejected + rows_skipped) */
} px_etl_result;

/* Loads one batch in one transaction. Returns 0, PX_ENOTHING when every input
 * was loaded before, PX_EREJECTS when more than p->max_reject_rate percent of
 * the rows were rejected (rolled back; e->detail summarizes the reasons), or
 * another negative error (nothing stored). A batch that drew an id and did not
 * commit is recorded in etl.failed_batches with its reason. */
int px_etl_load(const px_config *cfg, const px_etl_params *p, px_etl_result *r, px_err *e);
/* Writes the status report (text or JSON) to out. */
int px_etl_status(const px_config *cfg, int json, FILE *out, px_err *e);

/* The batch log, read by other folders (batches.c) instead of etl.batches. */
typedef struct px_etl_batch {
    long long batch_id;
    char format[32];
    char finished[40];     /* 'YYYY-MM-DD HH24:MI TZ' in the session's zone ("" while running) */
    long long rows_loaded;
} px_etl_batch;

/* The batches a derived result draws on: every finished batch that loaded rows,
 * as a PostgreSQL array literal ("{1,2,5}", "{}" when none); caller frees. 0 or PX_EDB. */
int px_etl_loaded_batches(PGconn *c, char **ids, px_err *e);
/* The batches whose ids are in ids (a PostgreSQL array literal), by id; caller
 * frees *out. 0 or PX_EDB. */
int px_etl_batches_by_id(PGconn *c, const char *ids, px_etl_batch **out, size_t *n, px_err *e);

/* ---- small utilities shared by every library ------------------------- */

/* Growable byte buffer ({0} is empty). The first failed append (out of memory, a
 * bad format) is sticky, as in SQLite's sqlite3_str: err keeps its code until
 * px_buf_reset or px_buf_release, so a writer may append freely and check
 * px_buf_failed() once before using the text (after a failure it is incomplete).
 * Each append still returns 0 or its error, for callers that check as they go,
 * and later appends are still attempted (callers that cut len and retry work). */
typedef struct px_buf { char *data; size_t len, cap; int err; } px_buf;
int px_buf_failed(const px_buf *b); /* 0, or the first failed append's error (PX_ENOMEM, PX_EINVAL) */
void px_buf_reset(px_buf *b);       /* empty again (keeps the memory), error cleared */
int px_buf_reserve(px_buf *b, size_t extra);
int px_buf_add(px_buf *b, const void *p, size_t n);
int px_buf_addc(px_buf *b, char ch);
int px_buf_adds(px_buf *b, const char *s);
int px_buf_printf(px_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void px_buf_release(px_buf *b);
/* Appends s escaped for COPY ... FROM STDIN (text format); len 0 writes \N when null. */
int px_buf_copy_field(px_buf *b, const char *s, size_t len);
int px_buf_json_str(px_buf *b, const char *s, size_t len);  /* "..." with escapes */

/* A COPY ... FROM STDIN writer: rows are appended to buf (text or binary, as
 * the COPY statement says) and sent in chunks. Usage:
 *   px_copy_in w; px_copy_in_begin(&w, c, "COPY t (a, b) FROM STDIN", "loading t", e);
 *   px_buf_printf(&w.buf, ...); px_copy_in_flush(&w, 0, e);  ... per row
 *   px_copy_in_end(&w, rc != 0, &rows, e);   -- always called, also after a failure
 * px_copy_in_end() aborts the COPY when abort is set (the server rolls the
 * statement back), reads every result and releases buf. */
typedef struct px_copy_in {
    PGconn *c;
    px_buf buf;
    size_t chunk;     /* flush threshold in bytes (default 1 MiB) */
    const char *what; /* names the load in errors */
    int open;         /* 1 between a successful begin and end */
} px_copy_in;
int px_copy_in_begin(px_copy_in *w, PGconn *c, const char *copy_sql, const char *what, px_err *e);
/* Sends buf when it holds at least w->chunk bytes, or anything when force. */
int px_copy_in_flush(px_copy_in *w, int force, px_err *e);
/* Finishes (or, when abort, cancels) the COPY; *rows (may be NULL) receives
 * the rows the server stored. Returns the first failure. */
int px_copy_in_end(px_copy_in *w, int abort, long long *rows, px_err *e);

/* SHA-256 of a byte range as 64 lower-case hex digits plus NUL. */
void px_sha256_hex(const void *data, size_t len, char out[65]);
/* The checksum trailer of model files: a last line "sha256 <64 hex>\n" over every
 * byte before it. _add appends it to b (0, or -1 out of memory); _check returns the
 * length of the bytes it covers, PX_TRAILER_MISSING when the bytes do not end in such
 * a line (truncated, or another file) or PX_TRAILER_MISMATCH when the digest differs. */
#define PX_SHA256_TRAILER_LEN 72 /* "sha256 " + 64 hex + "\n" */
enum { PX_TRAILER_MISSING = -1, PX_TRAILER_MISMATCH = -2 };
int px_sha256_trailer_add(px_buf *b);
long long px_sha256_trailer_check(const void *bytes, size_t len);
/* Reads a whole file into *data (NUL-terminated, not counted in *len); caller frees.
 * Refuses files over max_bytes. Returns 0 or PX_EIO / PX_ENOMEM / PX_EINVAL. */
int px_file_read(const char *path, size_t max_bytes, unsigned char **data, size_t *len, px_err *e);
/* Writes data to path atomically (a temporary file in the same directory, fsync,
 * rename), with the given mode. Returns 0 or PX_EIO. */
int px_file_write_atomic(const char *path, const void *data, size_t len, int mode, px_err *e);
/* The same, the file owned by uid:gid ((uid_t)-1 / (gid_t)-1 keep the caller's), set
 * before the rename. */
int px_file_write_atomic_owned(const char *path, const void *data, size_t len, int mode, uid_t uid, gid_t gid,
                               px_err *e);
/* mkdir -p with the given mode for the directories it creates. Returns 0 or PX_EIO. */
int px_mkdir_p(const char *dir, int mode, px_err *e);

/* qsort comparator for doubles, ascending (no NaNs expected). */
int px_cmp_double(const void *a, const void *b);
/* The type 7 quantile (R's default; Hyndman & Fan 1996) of sorted s[0..n-1], n > 0:
 * linear interpolation between order statistics at h = (n - 1) p. */
double px_quantile7(const double *s, size_t n, double p);

/* Monotonic clock (CLOCK_MONOTONIC): for durations only, never for dates. */
double px_mono_s(void);     /* seconds */
uint64_t px_mono_us(void);  /* microseconds */

/* 64-bit FNV-1a of a NUL-terminated string: the hash of the string-interning
 * tables (open addressing, power-of-two sizes); not for anything adversarial
 * that could flood a table, and not a checksum. */
uint64_t px_hash_str(const char *s);

/* Calendar arithmetic in the proleptic Gregorian calendar, days since
 * 1970-01-01, no time zone (H. Hinnant, "chrono-Compatible Low-Level Date
 * Algorithms"; exact for every date, eras of 400 years start on March 1st). */
int px_days_from_civil(int y, int m, int d);
void px_civil_from_days(int days, int *y, int *m, int *d);
int px_days_in_month(int y, int m);   /* m in 1..12 */

/* The one seeded random generator: xoshiro256** (Blackman & Vigna 2018),
 * seeded by splitmix64 (Steele et al. 2014). Same seed, same sequence, on every
 * machine. Not for secrets (keys come from OpenSSL's RAND_bytes). */
typedef struct px_rng {
    uint64_t s[4];
} px_rng;
/* One splitmix64 step: advances *x by the golden gamma and returns the mixed value. */
uint64_t px_splitmix64(uint64_t *x);
/* s[0..3] = the first four splitmix64 outputs from state seed. */
void px_rng_seed(px_rng *r, uint64_t seed);
/* Next 64 random bits. Inline: the generator draws it hundreds of millions of times. */
static inline uint64_t px_rng_next(px_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3] << 45 | s[3] >> 19;
    return result;
}
/* 53 random bits as a double in [0, 1). */
static inline double px_rng_unif(px_rng *r) { return (double)(px_rng_next(r) >> 11) * 0x1.0p-53; }
/* 53 random bits centred in their cell: in (0, 1), never 0 or 1 (safe for log). */
static inline double px_rng_unif_pos(px_rng *r) { return ((double)(px_rng_next(r) >> 11) + 0.5) * 0x1.0p-53; }

/* ---- synthetic data ---------------------------------------------------- */

typedef struct px_gen_params {
    long long patients;      /* number of patients */
    uint64_t seed;
    const char *out_dir;
    int facilities;          /* number of hospitals (default 40) */
    int start_year, end_year;/* admission years, inclusive (default 2019..2023) */
    int small_facilities;    /* extra facilities with 1-10 stays each, one patient each (default 0) */
} px_gen_params;

px_gen_params px_gen_default_params(void);
typedef struct px_gen_result {
    long long patients, encounters, diagnoses, procedures, facilities, providers;
} px_gen_result;
/* Writes canonical CSV and truth.json to out_dir (created if needed).
 * Same parameters, same bytes. */
int px_generate(const px_gen_params *p, px_gen_result *r, px_err *e);

#endif
