/* serve.h: the prediction and drift-alert server (libmicrohttpd + cJSON), its
 * API keys, and the drift statistics shared with `prognos drift check`.
 *
 * The server answers from memory: models, keys and alert lists are refreshed by a
 * background thread, predictions are audited through a bounded queue written to
 * PostgreSQL by another thread. Only lookups of a warehouse encounter
 * ({"encounter_id": ...}) and /v1/kpi read the database while a request waits.
 * Library calls return 0 or a negative PX_E* code and fill the caller's px_err. */
#ifndef PROGNOS_SERVE_H
#define PROGNOS_SERVE_H

#include "registry/registry.h"

/* ---- the server ------------------------------------------------------------ */

typedef struct px_serve_params {
    const char *listen;          /* "HOST:PORT", IPv4 (default "127.0.0.1:8080"); port 0 = any free port */
    const char *port_file;       /* NULL, or a file the bound port is written to once listening */
    const char *models;          /* comma-separated model names to serve, NULL = every model with a champion */
    unsigned threads;            /* libmicrohttpd worker threads (default one per online core, at most 64) */
    unsigned max_connections;    /* open connections in all (default 512) */
    unsigned max_per_ip;         /* open connections from one address (default 128) */
    unsigned idle_timeout_s;     /* a connection idle this long is closed (default 10 s) */
    unsigned request_timeout_ms; /* deadline of a request head (cut), body (408) and answer (default 5000 ms) */
    size_t max_body_bytes;       /* request body limit (default 1 MiB): 413 above it */
    size_t max_instances;        /* instances in one predict request (default 1000) */
    int max_depth;               /* JSON nesting depth, checked before cJSON parses (default 8) */
    unsigned poll_ms;            /* how often the champion aliases and keys are re-read (default 1000 ms) */
    size_t audit_queue;          /* prediction audit records held while the database is slow or
                                  * down (default 262144); when full, predict answers 503 */
    unsigned audit_flush_ms;     /* the audit writer's longest wait between writes (default 200 ms) */
    size_t drift_window;         /* instances per drift window (default 1000) */
    unsigned drift_window_s;     /* a window also closes after this long with at least drift_min_n (default 300 s) */
    size_t drift_min_n;          /* smallest window that is tested (default 100) */
    unsigned drift_min_interval_ms; /* a full window closes no sooner than this after it opened
                                  * (default 1000 ms): at most one test per second per version */
    double drift_alpha;          /* family-wise false-alarm probability per window (default 0.01) */
    double psi_floor;            /* smallest PSI that may alert, whatever n (default 0.1) */
    double effect_floor;         /* smallest KS distance / Cramer's V that may alert (default 0.1) */
    int public_metrics;          /* 1: /metrics needs no key (default 0: role read) */
    int fast_parse;              /* 1: the one-pass reader for the common predict body, cJSON
                                  * for the rest (default); 0: cJSON for every body */
    const char *tls_cert;        /* PEM certificate (chain) file: HTTPS through libmicrohttpd's TLS
                                  * (GnuTLS); NULL: plain HTTP (default) */
    const char *tls_key;         /* PEM private key of tls_cert (both or neither) */
    const char *cors_origins;    /* comma-separated origins a browser may call from ("*": any);
                                  * NULL: none (default) */
    const char *public_url;      /* the server's base URL as clients reach it (the CDS Hooks JWT
                                  * audience, links in cards); default http(s)://listen */
    const char *cds_jwks;        /* JWKS file of the CDS clients' public keys: CDS calls then need
                                  * a client's signed JWT; NULL: a predict API key instead */
    const char *cds_issuers;     /* comma-separated iss values accepted (NULL: any issuer whose
                                  * key is in the JWKS) */
} px_serve_params;

px_serve_params px_serve_default_params(void);

typedef struct px_server px_server;   /* opaque */

/* Starts the server: loads the API keys and the champions of the served models,
 * starts the audit writer, the poller and libmicrohttpd. Returns a running
 * server (caller stops it with px_serve_free) or NULL on error (port in use,
 * database unreachable, no model to serve). While it runs, cJSON's allocation
 * hooks are the server's (request bodies parse into per-request arenas; every
 * other cJSON use falls through to malloc/free); one server per process. */
px_server *px_serve_start(const px_config *cfg, const px_serve_params *p, px_err *e);
/* The port the server listens on (useful with port 0). */
unsigned px_serve_port(const px_server *s);
/* Blocks until px_serve_stop is called. Returns 0. */
int px_serve_wait(px_server *s);
/* Async-signal-safe: asks the poller to reload every served model now (SIGHUP). */
void px_serve_reload(px_server *s);
/* Async-signal-safe: makes px_serve_wait return (SIGINT, SIGTERM). */
void px_serve_stop(px_server *s);
/* Stops accepting, finishes requests in flight, flushes the audit queue (for at
 * most a few seconds when the database is down: the count of records that could
 * not be written is logged) and frees everything. Accepts NULL. */
void px_serve_free(px_server *s);

/* ---- API keys ----------------------------------------------------------------- */

/* Roles: predict (POST predict), read (GET models, kpi, drift, alerts, metrics),
 * admin (everything, and POST /v1/admin/reload). */
typedef enum { PX_KEY_PREDICT = 1, PX_KEY_READ = 2, PX_KEY_ADMIN = 3 } px_key_role;
const char *px_key_role_name(px_key_role r);             /* "predict", "read", "admin" */
int px_key_role_parse(const char *s, px_key_role *r);    /* 0 or PX_EINVAL */

/* A key is "pxk_<id>_<secret>": id is 12 hex digits (public, names the key in
 * logs and audit rows), secret 43 base64url characters (256 random bits). Only
 * SHA-256(secret) is stored. Writes the whole key (once: it cannot be recovered)
 * into key (at least PX_KEY_LEN + 1 bytes) and its id into id (13 bytes). */
#define PX_KEY_LEN 60
int px_key_create(PGconn *c, const char *name, px_key_role role, char *key, size_t keylen, char id[13], px_err *e);
/* Revokes a key by id. PX_ENOTFOUND when no active key has that id. */
int px_key_revoke(PGconn *c, const char *id, px_err *e);
/* Lists keys (id, name, role, created, revoked; never a secret or hash). */
int px_key_list(PGconn *c, int json, FILE *out, px_err *e);

/* ---- drift ---------------------------------------------------------------------- */

typedef struct px_drift_params {
    double alpha;          /* family-wise false-alarm probability per window (default 0.01) */
    double psi_floor;      /* default 0.1 */
    double effect_floor;   /* default 0.1 */
    size_t min_n;          /* smallest sample that is tested (default 100) */
} px_drift_params;

px_drift_params px_drift_default_params(void);

/* prognos drift check: for each champion (model: one name, or NULL for all),
 * scores the rows of its feature table whose encounters came from etl batches the
 * version was not trained on (since_batch > 0: from batches >= since_batch
 * instead), tests them as one window against the version's reference with the
 * server's tests and thresholds, stores alerts (source 'drift check', updating
 * open ones) and writes a report (text or JSON) to out. *alerts receives the
 * number raised. Returns 0; PX_ENOTHING when no champion had at least min_n new
 * rows; PX_ENOTFOUND for a model without a champion; or a negative error. */
int px_drift_check(PGconn *c, const px_config *cfg, const char *model, long long since_batch,
                   const px_drift_params *p, int json, FILE *out, int *alerts, px_err *e);

/* The statistics (stats.c). Counts a (window) and b (reference) over the same k bins. */

/* Population stability index sum (p_i - q_i) ln(p_i / q_i) over shares of the
 * counts, each bin's count raised by 0.5 first so an empty bin gives a finite
 * value. */
double px_drift_psi(const double *a, const double *b, size_t k);
/* The PSI above which the two samples (sizes n and m) differ at level alpha:
 * (1/n + 1/m) * chi2_{k-1} quantile at 1 - alpha (Yurdakul & Naranjo 2020:
 * under no change, PSI ~ (1/n + 1/m) chi2 with k-1 df). */
double px_drift_psi_critical(size_t k, double n, double m, double alpha);
/* Two-sample Kolmogorov-Smirnov distance between binned samples (the largest
 * gap of the cumulative shares at the bin edges: a lower bound of the unbinned
 * distance, so the test is conservative), and its asymptotic p-value
 * Q_KS(sqrt(nm/(n+m)) D) into *p. */
double px_drift_ks(const double *a, const double *b, size_t k, double *p);
/* Kolmogorov's limiting distribution: P(K > lambda). */
double px_drift_kolmogorov_q(double lambda);
/* Pearson chi-square test of homogeneity of the 2 x k table (bins empty in both
 * samples dropped): statistic, degrees of freedom, p-value, Cramer's V. Returns 0,
 * or PX_EINVAL when fewer than two bins are left or a sample is empty. */
int px_drift_chi2(const double *a, const double *b, size_t k, double *stat, int *df, double *p, double *v);

/* ---- JSON pre-check --------------------------------------------------------------- */

/* Checks text[0..len) before cJSON's lenient recursive parser sees it: strict
 * RFC 8259 (no leading zeros, no "70.", only the four white-space bytes between
 * tokens, one value and nothing after it, valid escapes and surrogate pairs),
 * strings of valid UTF-8 without raw control characters or \u0000, and arrays and
 * objects nested at most max_depth (<= 64) deep. Returns 0; PX_EINVAL when too
 * deep, PX_ECORRUPT otherwise; *offset is where, *why (static text) what. */
int px_json_validate(const char *text, size_t len, int max_depth, size_t *offset, const char **why);
/* px_json_validate without the reason. */
int px_json_precheck(const char *text, size_t len, int max_depth, size_t *offset);
/* The length (2-4) of the valid UTF-8 sequence starting at t[i], a byte >= 0x80,
 * within t[0..len); 0 when it is not one (overlong, surrogate, over U+10FFFF, cut). */
size_t px_utf8_seq(const unsigned char *t, size_t len, size_t i);

#endif
