/* internal.h: the pieces of the server shared by serve/'s files and no other folder.
 *
 * Threads: libmicrohttpd's workers run requests; one poller thread reloads
 * models and keys, evaluates drift windows and stores alerts; one audit thread
 * writes prediction records. Shared objects that change (a model version, the
 * key set, cached JSON) are reference counted and swapped under a slot's mutex:
 * a request acquires what it uses once and releases it in its completion
 * callback, so a swap never frees anything a request still holds. */
#ifndef PROGNOS_SERVE_INTERNAL_H
#define PROGNOS_SERVE_INTERNAL_H

#include "serve/serve.h"
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>

struct MHD_Connection;

#define SRV_MAX_MODELS 32
#define SRV_MAX_DRIFT 256

uint64_t srv_mono_us(void);   /* CLOCK_MONOTONIC in microseconds */
uint64_t srv_wall_us(void);   /* CLOCK_REALTIME in microseconds */

/* ---- reference counting (http.c) ------------------------------------------- */

/* The first member of every shared object. */
typedef struct srv_rc {
    atomic_int refs;
    void (*destroy)(void *self);
} srv_rc;

/* A slot holds the current object of a kind; swapping is atomic for readers. */
typedef struct srv_slot {
    pthread_mutex_t mu;
    void *cur;   /* srv_rc-headed object or NULL */
} srv_slot;

void srv_slot_init(srv_slot *s);
/* Returns the current object with a reference taken (or NULL); pair with srv_release. */
void *srv_acquire(srv_slot *s);
/* Installs obj (the slot takes over the caller's reference) and drops the slot's
 * reference to the previous object, which is freed when its last holder lets go. */
void srv_slot_swap(srv_slot *s, void *obj);
void srv_slot_release(srv_slot *s);       /* drops the current object */
void srv_release(void *obj);              /* accepts NULL */

/* A reference-counted immutable text (cached JSON bodies). */
typedef struct srv_text {
    srv_rc rc;
    size_t len;
    char s[];
} srv_text;
srv_text *srv_text_new(const char *s, size_t len);   /* NULL on ENOMEM */

/* ---- API keys (auth.c) --------------------------------------------------------- */

typedef struct srv_key {
    char id[13];
    unsigned char hash[32];   /* SHA-256 of the secret */
    px_key_role role;
} srv_key;

typedef struct srv_keyset {
    srv_rc rc;
    uint64_t gen;              /* unique per fetched set (a freed set's address may come back) */
    size_t n;
    srv_key keys[];
} srv_keyset;

/* Reads the active keys. Caller releases with srv_release. */
srv_keyset *srv_keys_fetch(PGconn *c, px_err *e);
/* Finds the key a request presented ("pxk_<id>_<secret>"). Compares the secret's
 * digest in constant time. Returns 1 and fills *out on a match, else 0. */
int srv_key_match(const srv_keyset *ks, const char *presented, srv_key *out);
/* May a key of role `have` call a route that needs `need`? */
int srv_role_allows(px_key_role have, px_key_role need);

/* ---- metrics (metrics.c) --------------------------------------------------------- */

enum {
    R_PREDICT, R_MODELS, R_MODEL, R_KPI, R_DRIFT, R_ALERTS, R_RELOAD,
    R_HEALTHZ, R_READYZ, R_METRICS, R_OPENAPI, R_UNKNOWN, R__COUNT
};
extern const char *const srv_route_names[R__COUNT];

#define SRV_NSTATUS 15
#define SRV_NBUCKETS 14
typedef struct srv_metrics {
    atomic_ullong requests[R__COUNT][SRV_NSTATUS];
    atomic_ullong latency_bucket[SRV_NBUCKETS + 1];   /* predict latency histogram (last: +Inf) */
    atomic_ullong latency_sum_us, latency_count;
    atomic_ullong instances;
    atomic_ullong audit_written, audit_write_errors, audit_rejected, audit_lost;
    atomic_ullong reloads, reload_failures, drift_windows, drift_alerts;
    atomic_ullong encounter_lookups, encounter_lookup_errors;
    atomic_ullong fast_parsed;     /* predict bodies read by the one-pass reader */
    atomic_ullong polls;           /* completed polls (keys, champions, caches): clients count them */
    atomic_int connections;
} srv_metrics;

void srv_metrics_request(srv_metrics *m, int route, unsigned status, uint64_t latency_us);
struct px_server;
/* Appends the Prometheus text of every metric to b. */
void srv_metrics_render(struct px_server *s, px_buf *b);

/* ---- drift monitoring (drift.c) --------------------------------------------------- */

/* One monitored variable (a feature, or the score) of a model version: the
 * reference's bins and the live window's counts. Numeric bins: e[b-1] < x <= e[b],
 * as the registry built them; the last bin is "missing". Categorical: one bin per
 * level, then "missing". */
typedef struct srv_var {
    char name[64];
    int numeric;
    size_t nedges;
    double *edges;
    size_t nbins;        /* bins including the missing bin */
    char **labels;       /* categorical: the level of each bin (borrowed from the model's reference copy) */
    double *ref;         /* reference counts per bin */
    double *win;         /* the open window's counts */
    double *closed;      /* closed windows waiting for evaluation: SRV_DRIFT_QUEUE x nbins (a ring) */
    /* results of the last evaluated window */
    double psi, psi_crit, ks, ks_p, chi2, chi2_p, cramer_v;
    int chi2_df, alert;
    char alert_test[16];
} srv_var;

#define SRV_DRIFT_QUEUE 8
typedef struct srv_drift {
    char name[64];
    int version;
    pthread_mutex_t mu;
    size_t nvars;              /* features + 1 (the score, last) */
    srv_var *vars;
    size_t n;                  /* instances in the open window */
    uint64_t opened_us;
    /* closed windows waiting for the poller, oldest first (a ring over vars[].closed):
     * each is tested on its own, so a window count does not depend on how soon the
     * poller runs; when it is SRV_DRIFT_QUEUE behind (the database away) the newest
     * absorbs the next */
    size_t q_head, q_len, q_n[SRV_DRIFT_QUEUE];
    /* last evaluation */
    size_t last_n;
    uint64_t last_at_us;
    int windows, alerts_last;
    int recorded;              /* windows whose alerts the poller has stored (srv_drift_recorded) */
    atomic_ullong predictions, requests;
    int stored_once, open_alerts;  /* poller only: alert bookkeeping of this monitor */
    char **level_store;        /* owned copies of categorical labels */
    size_t nlevel_store;
} srv_drift;

struct srv_model;
/* Builds a monitor for a loaded version from its reference.json (NULL when the
 * reference is missing or malformed: the message says why). Caller frees. */
srv_drift *srv_drift_new(const struct srv_model *sm, const cJSON *ref, px_err *e);
void srv_drift_free(srv_drift *d);
/* Bin index of value v (NAN = missing) of variable j. */
size_t srv_drift_bin(const srv_drift *d, size_t j, double v);
/* Adds nrows instances' bins (nrows x nvars, row-major). Closes the window when it
 * is full or old enough; returns 1 when a window was closed (the poller should look). */
int srv_drift_add(srv_drift *d, const uint16_t *bins, size_t nrows, const px_serve_params *p);
/* Closes the open window now, whatever its size (prognos drift check). */
void srv_drift_close(srv_drift *d);
/* Closes the window if it is old enough (timer path); returns 1 when closed. */
int srv_drift_tick(srv_drift *d, const px_serve_params *p);

/* One variable's verdict in a tested window. */
typedef struct srv_drift_alert {
    char model[64];
    int version;
    char feature[64];
    char test[16];      /* psi | ks | chi2 */
    double statistic, threshold, p_value, psi;
    size_t n, ref_n;
} srv_drift_alert;

/* Tests counts a (window, size n) against b (reference) for one variable and sets
 * v's result fields; alpha is the per-test level (already divided among the tests). */
void srv_drift_test_var(srv_var *v, const double *a, const px_drift_params *p, double alpha);
/* Evaluates d's oldest closed window (if any): fills alerts (up to max) and returns
 * their count, or -1 when nothing was waiting. Call again for the next one. */
int srv_drift_evaluate(srv_drift *d, const px_drift_params *p, srv_drift_alert *alerts, int max);
/* The alerts of the last evaluated window are in the database (counted in /v1/drift
 * as windows_recorded: a client that sees it sees the stored alerts). */
void srv_drift_recorded(srv_drift *d);
/* Stores alerts in serve.drift_alerts (open alerts of the same model, version,
 * feature and test are updated, not duplicated) and resolves open alerts of the
 * version's variables that tested clean. Returns 0 or PX_EDB. */
int srv_alerts_store(PGconn *c, const char *model, int version, const srv_drift_alert *a, int n,
                     const char *source, px_err *e);
/* The JSON of a monitor's last evaluation (cJSON object; caller deletes). */
cJSON *srv_drift_json(srv_drift *d);

/* ---- served models (model.c) ---------------------------------------------------- */

typedef struct srv_feat {
    const px_feature_info *info;   /* borrowed from the model */
    const char *name;
    size_t namelen;
    char *json_name;               /* the name as a JSON string, quotes included */
    size_t json_namelen;
    int numeric;
    int flag;                      /* a 0/1 input */
    double lo, hi;                 /* accepted range (numeric) */
} srv_feat;

typedef struct srv_model {
    srv_rc rc;
    char name[64];
    int version;
    char algo[16];
    char task[16];
    char feature_table[256];
    px_model *m;
    size_t k;
    srv_feat *f;
    double band_cut[3];            /* score cut-offs between low | medium | high | very_high */
    char *lookup_sql;              /* encounter lookup: $1 = uuid[] of pseudonyms */
    char *schema_json;             /* the model's input schema, for GET /v1/models/{model} */
    srv_drift *drift;              /* borrowed: owned by the server's drift list */
    char version_header[80];       /* "name/version": the X-Model-Version header */
    char version_json[16];         /* the version as a JSON number */
    size_t least_instance_bytes;   /* the shortest instance that gives every required input */
    uint64_t loaded_at_us;
} srv_model;

/* Loads version `version` of `name` from its artifact directory, verified by the
 * registry against its signature and the digests registered in registry.versions
 * (read through c), reads reference.json, builds the schema. Caller releases. */
srv_model *srv_model_load(PGconn *c, const px_config *cfg, const char *name, int version, const char *algo,
                          const char *task, const char *feature_table, px_err *e);
/* SELECT encounter_id::text, <every input>::text FROM <feature table> f WHERE <where>.
 * Identifiers quoted. Caller frees; NULL on ENOMEM. */
char *srv_model_select_sql(const srv_model *sm, const char *where);
#define SRV_FLAG_IMPUTED 1       /* missing: imputed by the model */
#define SRV_FLAG_EXTRAPOLATED 2  /* outside the training range */
#define SRV_FLAG_UNKNOWN_LEVEL 4 /* a level the model never saw: scored as the reference level */
/* Fills in what srv_model_load derives from sm->f (least_instance_bytes). */
void srv_model_derive(srv_model *sm);
/* The input of sm named by the n bytes at name, or -1; hint: where to look first
 * (the position the client put it in). */
int srv_feature_index(const srv_model *sm, const char *name, size_t n, size_t hint);
/* The level of fi spelled by the n bytes at s, or (size_t)-1. */
size_t srv_level_index(const px_feature_info *fi, const char *s, size_t n);
/* Parses a feature-table value (libpq text) for input f, setting flags. */
double srv_table_value(const srv_feat *f, const char *s, int isnull, unsigned char *flags);
/* "low", "medium", "high", "very_high" (or "unknown" for a non-finite value). */
const char *srv_band(const srv_model *sm, double value);
/* The scale of the contributions: "log-odds", "log" or "value". */
const char *srv_contribution_scale(const srv_model *sm);

/* ---- audit (audit.c) -------------------------------------------------------------- */

/* 56 bytes: a queue of 262144 records (10 s at 25,000 requests/s) is 14 MiB. */
typedef struct srv_audit_rec {
    uint64_t at_us;            /* wall clock */
    unsigned char request_id[16];
    char key_id[12];           /* 12 hex digits, no NUL */
    uint16_t model;            /* index into the server's model names (fixed once set) */
    int32_t version;
    uint32_t instances, by_encounter;
    uint32_t latency_us;
} srv_audit_rec;

typedef struct srv_audit {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_audit_rec *ring;
    size_t cap, head, count;
    int stop;
    unsigned flush_ms;
    pthread_t th;
    int started;
    const px_config *cfg;
    srv_metrics *metrics;
    const char (*names)[64];   /* the server's model names, by srv_audit_rec.model */
    atomic_int db_ok;          /* the last write succeeded */
    atomic_ullong backlog_peak;
} srv_audit;

int srv_audit_start(srv_audit *a, const px_config *cfg, size_t cap, unsigned flush_ms, srv_metrics *m,
                    const char (*names)[64], px_err *e);
/* Queues a record; returns 0, or -1 when the queue is full (the caller refuses the prediction). */
int srv_audit_push(srv_audit *a, const srv_audit_rec *r);
size_t srv_audit_depth(srv_audit *a);
/* Flushes what it can for at most grace_ms, stops the thread, frees the ring. */
void srv_audit_stop(srv_audit *a, unsigned grace_ms);

/* ---- the server (http.c, routes.c, poll.c) ------------------------------------------- */

struct px_server {
    px_config cfg;
    px_serve_params p;
    px_drift_params dp;
    char listen_host[64];
    unsigned port;
    struct MHD_Daemon *d;
    px_pseudo *pseudo;

    /* served models: names are fixed once set; slots swap versions */
    char names[SRV_MAX_MODELS][64];
    srv_slot models[SRV_MAX_MODELS];
    atomic_int nmodels;
    int failed_version[SRV_MAX_MODELS];      /* poller only: the last version that failed to load */
    uint64_t failed_at_us[SRV_MAX_MODELS];
    char **only;               /* --models filter (NULL: all) */

    srv_slot keys;             /* srv_keyset */
    srv_slot models_json;      /* srv_text: registry versions and aliases */
    srv_slot alerts_json;      /* srv_text: recent alerts */

    pthread_mutex_t drift_mu;
    srv_drift *drifts[SRV_MAX_DRIFT];
    size_t ndrifts;

    srv_audit audit;
    srv_metrics metrics;

    /* database reads on the request path (encounter lookups, /v1/kpi) */
    pthread_mutex_t pool_mu;
    PGconn *pool[4];
    int pool_n;
    atomic_int db_ok;

    pthread_t poller;
    int poller_started;
    int listen_fd;             /* ours: the acceptor hands connections to libmicrohttpd's workers in turn */
    /* open connections (http.c): each one's deadline, enforced by the acceptor's
     * sweep, and who is evicted when the server or an address is full */
    pthread_mutex_t conn_mu;
    struct srv_conn *conn_head, *conn_tail; /* in the order accepted */
    struct srv_conn **conn_by_fd;          /* [fd]: handed to libmicrohttpd, not yet closed */
    size_t conn_by_fd_n;
    unsigned conn_live;                    /* in the list and not cut */
    uint32_t *conn_ip_key;                 /* scratch for counting per address (conn_ip_n slots) */
    unsigned *conn_ip_count;
    size_t conn_ip_n;
    atomic_ullong conn_cut, conn_evicted, conn_refused; /* totals, for the log and /metrics */
    atomic_ullong log_sec, log_n, log_left; /* libmicrohttpd's log lines this second, and left out */
    int accept_pipe[2];        /* a byte stops the acceptor */
    pthread_t acceptor;
    int acceptor_started;
    int poll_pipe[2];          /* a byte wakes the poller (reload, stop, drift window closed) */
    int stop_pipe[2];          /* a byte makes px_serve_wait return */
    atomic_int reload_all, stopping, drift_pending;
    atomic_int ready;          /* 1 once every served model is loaded */
    atomic_ullong started_us;
    char req_prefix[9];        /* per-process random part of request ids */
    int hooks;                 /* cJSON allocation hooks installed */
    atomic_ullong req_seq;
};

void *srv_poller_main(void *arg);
/* One poll: keys, champions, caches, drift windows. Used at start-up and by the poller. */
int srv_poll_once(px_server *s, PGconn *c, int force, px_err *e);
/* Adds a loaded model's drift monitor to the server's list (the list owns it). */
void srv_drift_register(px_server *s, srv_drift *d);

/* A connection for the server's own use (never starts an embedded server), with
 * a 2 s connect timeout and the given statement timeout. Caller PQfinishes. */
PGconn *srv_db_open(const px_config *cfg, const char *app, int statement_timeout_ms, px_err *e);
/* A pooled connection for request-path reads (statement timeout 2 s); return it
 * with srv_pool_put (broken: close it instead). */
PGconn *srv_pool_get(px_server *s, px_err *e);
void srv_pool_put(px_server *s, PGconn *c, int broken);

/* ---- the request arena (arena.c) --------------------------------------------------- */

/* cJSON allocates two blocks per value; a request's parse is served from an arena
 * that lives in the request and goes with it, instead of a hundred malloc/free
 * pairs. cJSON's allocation hooks (process-wide, installed by px_serve_start) take
 * from the calling thread's current arena, and fall back to malloc/free when none
 * is set, so every other use of cJSON is unchanged. */
typedef struct srv_arena_chunk {
    struct srv_arena_chunk *next;
    size_t size;
} srv_arena_chunk;

typedef struct srv_arena {
    char *cur, *start, *end;     /* the chunk being filled */
    srv_arena_chunk *chunks;     /* malloc'd chunks beyond the inline buffer */
    char *inline_start;
    size_t inline_size;
} srv_arena;

void srv_arena_init(srv_arena *a, char *buf, size_t size);
void srv_arena_release(srv_arena *a);
/* Makes a the calling thread's current arena (NULL: none). */
void srv_arena_use(srv_arena *a);
/* n bytes (16-aligned) from a, for memory that lives as long as the request;
 * zeroed when zero is set. NULL on ENOMEM. Never given to free(). */
void *srv_arena_alloc(srv_arena *a, size_t n, int zero);
void srv_cjson_hooks_install(void);
void srv_cjson_hooks_remove(void);

/* The request being served: all of its memory hangs off this struct, freed in
 * the completion callback (or, wiped of anything sensitive, kept with its
 * buffers for the thread's next request: see http.c). */
typedef struct srv_req {
    px_server *s;
    uint64_t t0_us;
    int route;
    int stage;                 /* 0: headers seen, 1: reading the body, 2: answered */
    unsigned status;
    unsigned head_status;      /* an error decided from the head, answered once the body is read */
    char request_id[33];
    char model_name[64];
    int bad_body;              /* 1: over the size limit (rest discarded) */
    int late;                  /* 1: part of the body came after the deadline (rest discarded) */
    int oom;
    size_t discarded;          /* body bytes read and dropped */
    px_buf body;
    px_buf out;                /* the response body (handed to MHD as persistent memory) */
    cJSON *json;
    srv_model *sm;             /* acquired model, released on completion */
    srv_key key;
    int has_key;
    uint64_t deadline_us;
    int close;                 /* 1: answer with Connection: close (a malformed head) */
    struct srv_conn *conn;     /* its connection's tracking entry (NULL if untracked) */
    /* per-instance arrays: in the arena, released with it */
    double *raw, *contrib, *values;
    uint16_t *bins;
    int *from_encounter;
    unsigned char *flags;      /* per input of each instance: SRV_FLAG_*; then k bytes of scratch */
    char (*pseudo)[33];        /* pseudonyms of the instances given by encounter id */
    px_buf scratch;            /* the uuid[] literal of an encounter lookup */
    srv_arena arena;           /* the parsed body (json) lives here */
    char arena_buf[];          /* SRV_ARENA_INLINE bytes, not cleared at allocation */
} srv_req;
#define SRV_ARENA_INLINE 8192
#define SRV_MAX_HEAD 8192 /* request line and headers, bytes (431 above) */
#define SRV_MHD_POOL 32768 /* libmicrohttpd's memory per connection, bytes (see http.c) */

/* Route handlers fill r->out and return the status. */
unsigned srv_route_predict(srv_req *r);
/* An "encounter_id" member name? (the first two bytes first: most inputs' names fail there) */
int srv_is_encounter_key(const char *k);
/* predict's first step: reads and checks the body's instances into r->raw and
 * r->flags (r->from_encounter marks those given by encounter id). fast: try the
 * one-pass reader first (*was_fast says whether it read the body). 0 with *n and
 * *n_enc set, or the status of the error written into r->out. The answer is the
 * same with fast 0 or 1 (unit_serve_fast). */
unsigned srv_predict_inputs(srv_req *r, int fast, size_t *n, size_t *n_enc, int *was_fast);
/* The one-pass reader (predict_fast.c): the instances of the common body, at most
 * cap of them, into raw and flags (cap * k each; seen: k bytes of scratch), as
 * the cJSON path would read them; 0 when the body is anything else. */
size_t srv_predict_fast(const srv_model *sm, const char *body, size_t len, size_t cap, double *raw,
                        unsigned char *flags, unsigned char *seen);
unsigned srv_route_models(srv_req *r, const char *name);
unsigned srv_route_kpi(srv_req *r, struct MHD_Connection *conn);
unsigned srv_route_drift(srv_req *r);
unsigned srv_route_alerts(srv_req *r, struct MHD_Connection *conn);
unsigned srv_route_metrics(srv_req *r);
unsigned srv_route_healthz(srv_req *r);
unsigned srv_route_readyz(srv_req *r);
unsigned srv_route_reload(srv_req *r);
unsigned srv_route_openapi(srv_req *r);

/* Writes the error body {"error":{"code","message","field"?},"request_id"} into r->out
 * and returns status. field may be NULL. */
unsigned srv_error(srv_req *r, unsigned status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

extern const char srv_openapi_json[];

/* Shortest round-trip decimal of a double into out (at least 32 bytes); JSON-safe
 * (non-finite values become null). Returns the length. */
size_t srv_fmt_double(char *out, double v);

#endif
