/* internal.h: declarations shared inside engine/ only (no other folder includes it).
 * Holds the canonical CSV layout (one table read by the loader, the generator and
 * the README), the streaming CSV reader, field validators and the migration table. */
#ifndef PROGNOS_ENGINE_INTERNAL_H
#define PROGNOS_ENGINE_INTERNAL_H

#include "engine/engine.h"
#include <stdbool.h>

/* ---- migrations (generated from <folder>/sql/NNN_name.sql) -------------- */
typedef struct eng_migration { int version; const char *name; const char *sql; } eng_migration;
extern const eng_migration eng_migrations[];
extern const int eng_migrations_count;

/* ---- canonical layout -------------------------------------------------- */

typedef enum {
    PX_T_TEXT,   /* free text, max 200 bytes */
    PX_T_KEY,    /* source key, not an identifier of a person (facility id, NPI) */
    PX_T_IDENT,  /* identifier of a person or encounter: pseudonymized on read */
    PX_T_DATE,   /* YYYY-MM-DD */
    PX_T_INT,
    PX_T_NUM,    /* decimal */
    PX_T_ENUM,   /* one of enum_values */
    PX_T_CODE,   /* ICD code; system given by the row's code_system column */
    PX_T_PDATE   /* YYYY-MM-DD, YYYY-MM or YYYY (de-identified extracts); first day of the period */
} px_coltype;

typedef struct px_col {
    const char *name;
    px_coltype type;
    bool required;
    px_id_kind id_kind;             /* PX_T_IDENT only */
    const char *const *enum_values; /* PX_T_ENUM only, NULL-terminated */
    const char *doc;
} px_col;

typedef struct px_table {
    const char *name;   /* patients, encounters, ... */
    const char *file;   /* patients.csv */
    const px_col *cols;
    int ncols;
    const char *doc;
} px_table;

enum { PX_TAB_FACILITIES, PX_TAB_PROVIDERS, PX_TAB_PATIENTS, PX_TAB_ENCOUNTERS,
       PX_TAB_DIAGNOSES, PX_TAB_PROCEDURES, PX_TAB__COUNT };
/* In load order: a table only references tables before it. */
extern const px_table px_canonical[PX_TAB__COUNT];
int px_canonical_col(const px_table *t, const char *name); /* index or -1 */

/* ---- CSV reader -------------------------------------------------------- */

/* Streaming RFC 4180 reader: fields separated by ',', optionally quoted with '"'
 * ("" inside quotes is a quote; quoted fields may span lines). Tolerates CRLF.
 * Each record is checked for valid UTF-8 and well-formed quoting. Field
 * pointers stay valid until the next px_csv_next() call. */
typedef struct px_csv px_csv;

typedef enum {
    PX_CSV_OK = 0,
    PX_CSV_BAD_QUOTING,   /* stray quote inside an unquoted field, text after a closing quote, or EOF inside quotes */
    PX_CSV_BAD_UTF8,
    PX_CSV_TOO_LONG       /* record over 1 MiB */
} px_csv_status;

/* fd is read with read(2) in large blocks and not closed. Caller frees. */
px_csv *px_csv_new(int fd);
void px_csv_free(px_csv *c);
/* Reads the next record. Returns 1 and sets *status (a malformed record is
 * still returned, with its fields as far as they parse, so the caller can count
 * and reject it), 0 at end of input, -1 on read error (errno set). */
int px_csv_next(px_csv *c, px_csv_status *status);
int px_csv_nfields(const px_csv *c);
const char *px_csv_field(const px_csv *c, int i);  /* NUL-terminated */
size_t px_csv_field_len(const px_csv *c, int i);
long long px_csv_line(const px_csv *c);       /* first physical line of the record, 1-based */
long long px_csv_bytes(const px_csv *c);      /* bytes consumed so far */
/* Feeds every byte read to a callback (used to hash a stream while parsing). */
void px_csv_set_tap(px_csv *c, void (*tap)(void *ctx, const void *buf, size_t n), void *ctx);

/* ---- field validators (validate.c) -------------------------------------- */

/* Days since 1970-01-01 for a valid calendar date. Returns 0 and sets *days,
 * or -1 if the text is not a valid date in the given form. */
int px_date_parse_iso(const char *s, size_t len, int *days);   /* YYYY-MM-DD */
int px_date_parse_ymd8(const char *s, size_t len, int *days);  /* YYYYMMDD (SynPUF) */
/* YYYY-MM-DD, YYYY-MM or YYYY; a missing day or month is taken as the first. */
int px_date_parse_partial(const char *s, size_t len, int *days);
void px_date_format(int days, char out[11]);                   /* YYYY-MM-DD */
int px_date_year(int days);
int px_date_today(void);
/* Integer/decimal parsing: whole field must be a number. 0 ok, -1 not a number. */
int px_parse_int(const char *s, size_t len, long long *v);
int px_parse_num(const char *s, size_t len, double *v);

/* ICD code syntax, with or without the dot (stored without). Returns true when
 * the code is well-formed for the system:
 *   ICD-9-CM diagnosis: 3-5 digits; V + 2-4 digits; E + 3-4 digits
 *   ICD-9-CM procedure: 2-4 digits
 *   ICD-10-CM diagnosis: letter (not U), digit, alnum, then up to 4 alnum
 *   ICD-10-PCS procedure: exactly 7 characters of 0-9 and A-Z except I and O */
bool px_icd9_dx_valid(const char *s, size_t len);
bool px_icd9_px_valid(const char *s, size_t len);
bool px_icd10_dx_valid(const char *s, size_t len);
bool px_icd10_pcs_valid(const char *s, size_t len);
/* Writes the code without dot, upper-cased, into out (>= 16 bytes); returns length or -1. */
int px_icd_normalize(const char *s, size_t len, char *out);

/* ---- COPY between two servers (shards.c) --------------------------------- */

/* Runs out_sql (a COPY ... TO STDOUT) on from and streams its data into in_sql
 * (a COPY ... FROM STDIN) on to, in the same format; *rows gets the count to
 * reports. Both connections are usable afterwards (the copy out is read to its
 * end even when the other side failed). 0 or PX_EDB with e set. */
int px_copy_pipe(PGconn *from, const char *out_sql, PGconn *to, const char *in_sql, long long *rows, px_err *e);

/* PX_TEST_KILL_AT=point: the process SIGKILLs itself at that named point of a
 * two-phase commit (shard_load.c lists them; tests of recovery). Unset or
 * another point: nothing. */
void px_test_kill_point(const char *point);

/* ---- COPY text encoding -------------------------------------------------- */

/* px_buf (growable byte buffer) is declared in engine/engine.h. */

#endif
