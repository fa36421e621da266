/* etl_int.h: the ETL's shared machinery (engine-internal): one batch context,
 * COPY streaming, reject spooling, the in-memory index of the batch's patients
 * and encounters, and the per-format loaders.
 *
 * Invariant: one batch = one transaction. Every row read from an input is
 * counted once, and ends either in a warehouse table or in etl.rejects; the
 * per-file counts are checked against the server's own row counts before COMMIT. */
#ifndef PROGNOS_ETL_INT_H
#define PROGNOS_ETL_INT_H

#include "engine/internal.h"
#include <libpq-fe.h>

/* ---- 16-byte-key hash map (open addressing; keys are pseudonyms or digests) ---- */
typedef struct px_keymap px_keymap;
/* value_size bytes per entry, zeroed on insert. Caller frees with _free. */
px_keymap *px_keymap_new(size_t value_size);
void px_keymap_free(px_keymap *m);
/* Returns the value for key, or NULL. Valid until the next put. */
void *px_keymap_get(const px_keymap *m, const unsigned char key[16]);
/* Returns the value for key, inserting a zeroed one if absent (*existed = 0);
 * NULL on out of memory. Valid until the next put. */
void *px_keymap_put(px_keymap *m, const unsigned char key[16], int *existed);
size_t px_keymap_count(const px_keymap *m);

/* ---- batch index ---------------------------------------------------------- */
typedef struct etl_patient {
    int birth_days;   /* exact date of birth, days since epoch (only in memory) */
    int death_days;   /* INT32_MIN if none */
    unsigned char sql_path; /* already in the warehouse, or refused by the merge: its encounters take the SQL path */
} etl_patient;

/* ENC_STAGED: new in this batch and merged; ENC_REJECTED: rejected in this batch;
 * ENC_EXISTING: already in the warehouse (its diagnoses take the SQL path). */
enum { ENC_STAGED = 1, ENC_REJECTED = 2, ENC_EXISTING = 3 };
typedef struct etl_encounter {
    unsigned char state;           /* ENC_* */
    long long line;                /* line in its file, for reject details */
    int adm_days;                  /* admission date: diagnoses are partitioned by it */
    unsigned char patient[16];     /* its patient: diagnoses and procedures carry it (the hash key of shards) */
    unsigned long long dx_seen[2]; /* diagnosis seq 0..99 already seen in this batch */
    unsigned long long px_seen[2];
} etl_encounter;

/* ---- one input -------------------------------------------------------------- */
typedef struct etl_input {
    char path[4096];      /* file path, or table name for the postgres format */
    char name[256];       /* file name as recorded (basename or source table) */
    int table;            /* PX_TAB_* for canonical; ETL_SYN_* for synpuf */
    int year;             /* synpuf beneficiary year */
    char sha[65];
    long long bytes;
    long long prior_batch;/* > 0 when already loaded */
} etl_input;

enum { ETL_SYN_BENE = 100, ETL_SYN_CLAIMS = 101 };

typedef struct etl_ctx {
    const px_config *cfg;
    const px_etl_params *p;
    PGconn *c;
    px_pseudo *ps;
    px_err *e;
    long long batch;
    int today;
    px_copy_in copy;      /* the open COPY; copy.buf holds the data not yet sent */
    char copy_what[300];  /* names the load in COPY errors */
    FILE *rej;            /* spooled reject rows, COPY text for etl.rejects */
    FILE *warn;           /* spooled field warnings, COPY text for etl.warnings */
    long long rej_spooled, warn_spooled; /* rows in those spools, checked against COPY */
    FILE *spool;          /* spooled rows that need the SQL path */
    px_keymap *patients;  /* etl_patient by patient pseudonym */
    px_keymap *encounters;/* etl_encounter by encounter pseudonym */
    px_keymap *facilities, *clinicians; /* provider ids in the warehouse (etl_provider_key), for direct loads */
    int dim_patient_new;  /* wh.dim_patient was empty when this batch began (and was truncated) */
    int min_birth_year;   /* earliest birth year among this batch's patients, 0 if none */
    int enc_y0, enc_y1;   /* admission years a stay of this batch can have (its patients' birth
                           * years to today): only those stays can take the direct path */
    unsigned char enc_part[10000]; /* 1 for each year whose encounters load partition exists:
                           * made when the year's first direct stay arrives (etl_canonical.c) */
    const char *copy_sql; /* the open COPY's statement, to reopen it after such a partition */
    long long copy_stored;/* rows the server stored in the COPYs of this file closed so far */
    px_buf notes;         /* warnings for the operator (px_etl_result.notes) */
    struct etl_shards *shards; /* a load into a distributed warehouse (shard_load.c), else NULL */
    unsigned char enc_years[10000]; /* 1 for each admission year of this batch's staged encounters */
    /* current file */
    etl_input *in;
    void *md;             /* EVP_MD_CTX hashing the bytes parsed from it */
    long long read, rejected, loaded;
    /* progress */
    long long total_bytes, done_bytes, last_draw;
} etl_ctx;

/* COPY streaming on x->c through px_copy_in (etl_copy.c): begin, append rows
 * to x->copy.buf, flush when large, end.
 * copy_end stores the server's row count in *rows. All return 0 or <0 with x->e set. */
int etl_copy_begin(etl_ctx *x, const char *sql);
int etl_copy_flush(etl_ctx *x, int force);
int etl_copy_end(etl_ctx *x, long long *rows);
/* Streams a spool file (COPY text) through COPY sql, then truncates the spool. */
int etl_copy_spool(etl_ctx *x, FILE *f, const char *sql, long long *rows);
/* COPY binary format (PostgreSQL's "PGCOPY" stream), appended to b: the server
 * then parses no text (uuid, date and numeric input functions are a large part
 * of a typed COPY's cost). Big-endian integers; dates are days since 2000-01-01.
 * Start with _header, write each row as _row(nfields) and that many fields,
 * end with _trailer before etl_copy_end. */
void etl_bin_header(px_buf *b);
void etl_bin_trailer(px_buf *b);
void etl_bin_row(px_buf *b, int nfields);
void etl_bin_null(px_buf *b);
void etl_bin_bytes(px_buf *b, const void *p, size_t n); /* text, char(n), uuid (16 bytes) */
void etl_bin_i16(px_buf *b, int v);
void etl_bin_i32(px_buf *b, int v);
void etl_bin_i64(px_buf *b, long long v);
void etl_bin_date(px_buf *b, int days_since_1970);
/* A numeric from its decimal text ([-]digits[.digits]); returns -1 (nothing
 * written) when s is not in that form. */
int etl_bin_numeric(px_buf *b, const char *s, size_t n);

/* Runs sql with $1 = batch id and $2 = the current file's name (as many as it
 * uses); the caller clears the result. */
PGresult *etl_exec(etl_ctx *x, const char *sql);
/* Runs SQL with $1 = batch id and $2 = file name (pass only those it uses).
 * *a and *b (may be NULL) get the integers in the first two columns of the
 * first row, or *a the command's row count when it returns no rows. */
int etl_sql(etl_ctx *x, const char *sql, long long *a, long long *b);
/* Marks encounters that the last merge rejected (ENC_REJECTED) or found
 * already loaded (ENC_EXISTING), from etl.rejects of the current file. */
int etl_mark_rejected_encounters(etl_ctx *x);

/* Records a rejected row of the current file (row_json may be NULL). */
void etl_reject(etl_ctx *x, long long line, const char *reason, const char *field, const char *detail,
                const char *row_json);
/* The longest prefix of s (len bytes) of at most max bytes that ends on a
 * UTF-8 character boundary. */
size_t etl_utf8_cut(const char *s, size_t len, size_t max);
/* The reject reason for a malformed record (PX_CSV_OK: wrong field count). */
const char *etl_csv_reason(px_csv_status st);
/* The detail of a future_date reject of column col: names the reference date
 * and the options that change it. */
void etl_future_detail(const etl_ctx *x, const char *col, char *buf, size_t len);
/* Records a value dropped from a loaded row of the current file. */
void etl_warn(etl_ctx *x, long long line, const char *reason, const char *field, const char *detail);
/* Flushes spooled rejects and warnings into etl.rejects and etl.warnings. */
int etl_rejects_flush(etl_ctx *x);
void etl_progress(etl_ctx *x, long long file_bytes_done);
/* Says on the progress line what the server is doing now (e.g. "merging"). */
void etl_progress_phase(etl_ctx *x, const char *phase);

/* Pseudonym as 16 raw bytes and as 32 hex digits. */
void etl_pseudo(etl_ctx *x, px_id_kind kind, const char *v, size_t len, unsigned char bin[16], char hex[33]);
/* Records key (within domain) in seen, a per-file set. Returns 1 if it was
 * there already (a duplicate), 0 if new, PX_ENOMEM (x->e set) on failure. */
int etl_seen(etl_ctx *x, px_keymap *seen, const char *domain, const char *key, size_t len);
/* The 16-byte key of a provider id: the id itself when it is at most 15 bytes
 * (length, then bytes), else a SHA-256 prefix marked apart from those. */
void etl_provider_key(const char *v, size_t len, unsigned char out[16]);
/* Parses a uuid's 32 hex digits (dashes skipped); 0, or -1 if it is not one. */
int etl_uuid_key(const char *s, unsigned char out[16]);
/* 16-byte digest of a plain key (facility ids and other non-identifiers). */
void etl_digest(const char *domain, const char *v, size_t len, unsigned char out[16]);

/* Hashes every byte the parser reads from the current input (SHA-256). */
int etl_hash_begin(etl_ctx *x, px_csv *csv);
/* After the input was read to its end: a stream's digest is recorded in x->in;
 * a file's must equal the one taken before the load, or the file changed
 * while it was read and the batch fails (PX_ECORRUPT). */
int etl_hash_end(etl_ctx *x, px_csv *csv);

/* The SHA-256 of a whole file (before its load) and its size. 0 or PX_EIO. */
int etl_sha256_file(const char *path, char hex[65], long long *bytes, px_err *e);

/* ---- inputs (etl_inputs.c) ---------------------------------------------------- */
/* The inputs of p->source in load order (*inputs, *n: caller frees); for the
 * postgres format also the source connection *src, inside a read-only
 * snapshot (caller closes). */
int etl_discover(const px_etl_params *p, etl_input **inputs, int *n, PGconn **src, px_err *e);
/* A libpq URI or conninfo rebuilt without its password, for etl.batches. */
void etl_redact_uri(const char *uri, char *out, size_t len);
/* A source table read as CSV through a pipe: *fd is the reading end (caller
 * closes it, then calls _close, which joins the reader and returns rc or the
 * reader's error). */
typedef struct etl_pg_feed etl_pg_feed;
int etl_pg_feed_open(etl_ctx *x, PGconn *src, const etl_input *in, etl_pg_feed **feed, int *fd);
int etl_pg_feed_close(etl_ctx *x, etl_pg_feed *feed, int rc);

/* Rejects of the batch by reason, most frequent first, each with one example,
 * into buf; *counted gets those that count against --max-reject-rate (all but
 * duplicate_key). */
int etl_reject_summary(etl_ctx *x, char *buf, size_t len, long long *counted);

/* Format loaders: load one input inside the open batch transaction. */
int etl_canonical_begin(etl_ctx *x);
/* The source recorded on the canonical loader's rows: canonical, postgres or fhir. */
const char *etl_source_name(const etl_ctx *x);
int etl_canonical_file(etl_ctx *x, int fd);
/* etl_merge.c: the canonical loader's SQL steps around one file's rows. */
int etl_canonical_prepare(etl_ctx *x, int tab);
int etl_canonical_merge(etl_ctx *x, int tab, long long direct, long long spooled, long long *loaded,
                        long long *rejected, long long *dups);
int etl_synpuf_begin(etl_ctx *x);
int etl_synpuf_file(etl_ctx *x, int fd);
/* The --code-map crosswalk (etl_codemap.c): NULL with e set on a bad file
 * (the line named). _get gives "icd10|I509" or "icd9|4280", or NULL. */
typedef struct etl_codemap etl_codemap;
etl_codemap *etl_codemap_read(const char *path, px_err *e);
const char *etl_codemap_get(const etl_codemap *m, const char *system, const char *code);
void etl_codemap_free(etl_codemap *m); /* accepts NULL */

/* FHIR Bulk Data NDJSON: every input not loaded before, in one go (etl_fhir.c);
 * records each in etl.batch_files and adds its counts to r. */
int etl_fhir_load(etl_ctx *x, etl_input *inputs, int n, px_etl_result *r);
/* Its database-free part (also the fuzz target's): _read turns the inputs
 * into the six canonical tables (temporary CSV files, rewound, header first),
 * rejecting at FHIR level through etl_reject() (x->rej) and counting skips.
 * Needs x->e, x->p, x->rej and x->warn; inputs' sha and bytes as taken before. */
typedef struct etl_fhir etl_fhir;
etl_fhir *etl_fhir_new(etl_ctx *x, etl_input *inputs, int n);
int etl_fhir_read(etl_fhir *f);
FILE *etl_fhir_table(const etl_fhir *f, int table, long long *rows);
/* Non-blank lines read and resources skipped of input file. */
void etl_fhir_counts(const etl_fhir *f, int file, long long *read, long long *skipped);
/* The NDJSON file name and line of row of a canonical table. */
void etl_fhir_origin(const etl_fhir *f, int table, long long row, const char **file, long long *line);
/* The skip reasons of input file as a JSON object {"reason": count}, appended to b. */
void etl_fhir_skipped_json(const etl_fhir *f, int file, px_buf *b);
/* Resources of input file skipped for a code system other than ICD. */
long long etl_fhir_unmapped(const etl_fhir *f, int file);
void etl_fhir_free(etl_fhir *f); /* accepts NULL */

/* ---- loads into a distributed warehouse (shard_load.c) ---------------------- */
/* When the fact tables are distributed: the session's pending tables and
 * views, and a connection to every shard (x->shards); else nothing. */
int etl_shards_begin(etl_ctx *x);
/* The loader's SQL for a sharded load: wh.fact_<t> read as px_fact_<t> (the
 * shards' rows and the batch's pending ones), INSERT INTO wh.fact_<t> into
 * px_pending_<t>. Writes sql rewritten to out; 1 if it changed, 0 if not, <0
 * (PX_ENOMEM) on failure. */
int etl_shard_sql(const char *sql, px_buf *out);
/* Sends each shard its part of the batch and PREPAREs it (px_<batch>_<shard>);
 * the caller then commits the batch, then calls etl_shards_commit. */
int etl_shards_ship(etl_ctx *x);
/* COMMIT PREPARED on every shard (after the coordinator committed). */
void etl_shards_commit(etl_ctx *x);
/* Closes the shard connections; failed: the batch did not commit, prepared
 * parts are rolled back (unless the coordinator's outcome is unknown). */
void etl_shards_end(etl_ctx *x, int failed);

/* The input's rows: the caller sets x->read/rejected/loaded; this records
 * etl.batch_files and checks read = loaded + rejected. */
int etl_file_done(etl_ctx *x);

#endif
