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
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

struct MHD_Connection;
typedef struct srv_conn srv_conn;

#define SRV_MAX_MODELS 32
#define SRV_MAX_DRIFT 256
#define SRV_MAX_INPUTS 4096 /* inputs of a served model */

uint64_t srv_mono_us(void);   /* CLOCK_MONOTONIC in microseconds */
uint64_t srv_wall_us(void);   /* CLOCK_REALTIME in microseconds */

/* ---- reference counting (refcount.c) ------------------------------------------- */

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
    uint64_t gen;              /* unique per fetched set (a freed set's address may come back), in the order its query started */
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

/* Routes, in the order of the route table (route_table.c); R_PREFLIGHT (a CORS
 * OPTIONS request) and R_UNKNOWN have no row. */
enum {
    R_PREDICT, R_V2_INFER, R_V2_INFER_VERSION, R_CDS_CALL, R_CDS_FEEDBACK, R_MODELS, R_MODEL, R_KPI, R_DRIFT, R_ALERTS, R_RELOAD, R_HEALTHZ,
    R_READYZ, R_METRICS, R_OPENAPI, R_V2_LIVE, R_V2_READY, R_V2_SERVER, R_V2_MODEL, R_V2_MODEL_VERSION,
    R_V2_MODEL_READY, R_V2_MODEL_VERSION_READY, R_CARD, R_CDS_DISCOVERY, R_PREFLIGHT, R_UNKNOWN, R__COUNT
};
#define SRV_NROUTES R_PREFLIGHT
static inline int srv_route_is_v2_infer(int id)
{
    return id == R_V2_INFER || id == R_V2_INFER_VERSION;
}
/* The Open Inference Protocol's routes answer errors as {"error": "<message>", ...}. */
static inline int srv_route_is_v2(int id)
{
    return srv_route_is_v2_infer(id) || (id >= R_V2_LIVE && id <= R_V2_MODEL_VERSION_READY);
}

#define SRV_NSTATUS 19
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
    atomic_ullong cds_cards, cds_warehouse, cds_feedback_accepted, cds_feedback_overridden, jwt_refused;
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
    srv_slot lookup;               /* the encounter lookup's reader fields (predict.c), built on first use */
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
#define SRV_FLAG_IMPUTED 1       /* missing: imputed by the model */
#define SRV_FLAG_EXTRAPOLATED 2  /* outside the training range */
#define SRV_FLAG_UNKNOWN_LEVEL 4 /* a level the model never saw: scored as the reference level */
/* Fills in what srv_model_load derives from sm->f (least_instance_bytes). */
void srv_model_derive(srv_model *sm);
/* The input of sm named by the n bytes at name, or -1; hint: where to look first
 * (the position the client put it in). */
int srv_feature_index(const srv_model *sm, const char *name, size_t n, size_t hint);
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

/* ---- the server (server.c, conn.c, request.c, poll.c) ------------------------------------------- */

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
    char **cors;               /* --cors-origins (NULL: none) */
    char *tls_cert_pem, *tls_key_pem; /* --tls-cert, --tls-key contents (the key wiped on free) */
    char public_url[256];      /* --public-url, or derived from --listen: no trailing slash */
    struct srv_jwt *jwt;       /* CDS clients' keys and seen jti values (NULL: no --cds-jwks) */

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
    /* open connections (conn.c): each one's deadline, enforced by the acceptor's
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
 * buffers for the thread's next request: see request.c). */
typedef struct srv_req {
    px_server *s;
    uint64_t t0_us;
    int route;
    int stage;                 /* 0: headers seen, 1: reading the body, 2: answered */
    unsigned status;
    unsigned head_status;      /* an error decided from the head, answered once the body is read */
    char request_id[33];
    char model_name[64];       /* the first path parameter: a model name or a CDS service id */
    char path_arg2[64];        /* the second: a model version (V2) */
    const char *origin;        /* an allowed CORS origin the request came from (answer header), or NULL */
    int preflight_route;       /* a CORS preflight's route (-1: refused) */
    int jwt;                   /* 1: authorized by a CDS client's JWT (key_id holds "jwt:" + its issuer's hash) */
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
#define SRV_MHD_POOL 32768 /* libmicrohttpd's memory per connection, bytes (see server.c) */

/* ---- the route table (route_table.c) ---------------------------------------------------
 *
 * One row per route: method, path (the OpenAPI path template: literal segments
 * and {param} segments of 1-63 bytes without '/'), who may call it, whether it
 * reads a body, its handler, its metric label and its OpenAPI operationId.
 * Matching, dispatch, /metrics and the OpenAPI check (unit_serve_routes) all
 * walk this table. */
typedef unsigned (*srv_handler)(srv_req *r, struct MHD_Connection *conn);
enum {
    SRV_PUBLIC = 0,
    SRV_NEED_PREDICT = PX_KEY_PREDICT,
    SRV_NEED_READ = PX_KEY_READ,
    SRV_NEED_ADMIN = PX_KEY_ADMIN,
    SRV_NEED_METRICS,   /* read, or public with --public-metrics */
    SRV_NEED_ANY_KEY,   /* any valid API key (V2 model metadata and readiness) */
    SRV_NEED_CDS        /* a CDS client's JWT when a JWKS is configured, else a predict key */
};
enum { SRV_BODY_NONE = 0, SRV_BODY_ANY = 1, SRV_BODY_JSON = 2 };
typedef struct srv_route {
    const char *method;     /* "GET" (HEAD too) or "POST" */
    const char *path;       /* OpenAPI path template */
    int need;               /* SRV_PUBLIC or SRV_NEED_* */
    int body;               /* SRV_BODY_*: JSON bodies need Content-Type: application/json */
    srv_handler handler;
    const char *metric;     /* the route label of prognos_http_requests_total */
    const char *operation;  /* the OpenAPI operationId */
} srv_route;
extern const srv_route srv_routes[SRV_NROUTES];
/* The metric label of route id (R_PREFLIGHT and R_UNKNOWN included). */
const char *srv_route_label(int id);
/* Matches method and url against the table: the route id, with arg0 and arg1
 * (args) filled from the path's parameters, or -1; then *wrong_method is the route
 * whose path matched with another method (405), or -1 (404). */
int srv_route_match(const char *method, const char *url, char arg0[64], char arg1[64], int *wrong_method);
/* The role a route needs, SRV_NEED_METRICS resolved by the server's options. */
int srv_route_need(const px_server *s, int id);

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
/* The served model named by r->model_name: its slot, with r->sm acquired; or
 * -1 with the error written and *st its status (404 unknown, 503 not loaded). */
int srv_predict_model(srv_req *r, unsigned *st);
/* Fills r->raw and r->flags of the n instances marked in r->from_encounter
 * (n_enc of them) from the model's feature table, by the pseudonyms in
 * r->pseudo. what: printf format of the field named in a 404 (one %zu: i).
 * 0 or the status of the error written. */
unsigned srv_lookup_encounters(srv_req *r, size_t n, size_t n_enc, const char *what)
    __attribute__((format(printf, 4, 0)));
/* Scores the n instances in r->raw (r->sm, slot): r->values and r->contrib,
 * the audit record (a full queue refuses: 503), the instance counter and the
 * drift counts. 0 or the status of the error written. */
unsigned srv_score(srv_req *r, int slot, size_t n, int by_encounter);
/* The used inputs of one instance's contributions c, largest magnitude first
 * (ties in input order), into order; returns how many. */
size_t srv_contrib_order(const srv_model *sm, const double *c, size_t *order);
/* Validates value v of input f (instance i) into *x, setting *flags: 0 or the
 * status of the error written (field named as /v1 or V2 names it: r->route). */
unsigned srv_check_value(srv_req *r, size_t i, const srv_feat *f, const cJSON *v, double *x, unsigned char *flags);
unsigned srv_route_models(srv_req *r, const char *name);
unsigned srv_route_kpi(srv_req *r, struct MHD_Connection *conn);
unsigned srv_route_drift(srv_req *r);
unsigned srv_route_alerts(srv_req *r, struct MHD_Connection *conn);
unsigned srv_route_metrics(srv_req *r);
unsigned srv_route_healthz(srv_req *r);
unsigned srv_route_readyz(srv_req *r);
unsigned srv_route_reload(srv_req *r);
unsigned srv_route_openapi(srv_req *r);
/* GET /v1/models/{model}/card: the served version's model card (Markdown). */
unsigned srv_route_card(srv_req *r, struct MHD_Connection *conn);
/* Open Inference Protocol V2 (v2.c) */
unsigned srv_v2_live(srv_req *r, struct MHD_Connection *conn);
unsigned srv_v2_ready(srv_req *r, struct MHD_Connection *conn);
unsigned srv_v2_server(srv_req *r, struct MHD_Connection *conn);
unsigned srv_v2_model(srv_req *r, struct MHD_Connection *conn);
unsigned srv_v2_model_ready(srv_req *r, struct MHD_Connection *conn);
unsigned srv_v2_infer(srv_req *r, struct MHD_Connection *conn);
/* The inference request's tensors into r->raw / r->flags (r->sm set): 0 with *n
 * rows and *want the outputs asked for (bit 0 value, 1 band, 2 contributions),
 * or the status of the error written (v2.c; fuzzed by tests/fuzz/fuzz_v2.c). */
unsigned srv_v2_inputs(srv_req *r, size_t *n, unsigned *want);
/* CDS Hooks 2.0 (cds.c) */
unsigned srv_cds_discovery(srv_req *r, struct MHD_Connection *conn);
unsigned srv_cds_call(srv_req *r, struct MHD_Connection *conn);
unsigned srv_cds_feedback(srv_req *r, struct MHD_Connection *conn);
/* Checks a CDS route's caller by the client's JWT (aud: the public URL + url).
 * 0, or 401 with the error written. */
unsigned srv_cds_authorize(srv_req *r, struct MHD_Connection *conn, const char *url);
/* A fresh request id (32 hex digits), unique in the process. */
void srv_request_id(px_server *s, char out[33]);
/* Prints o into r->out with the request id added (when add_id) and deletes o;
 * returns status, or 503 when out of memory. */
unsigned srv_send_json(srv_req *r, cJSON *o, unsigned status, int add_id);

/* Writes the error body {"error":{"code","message","field"?},"request_id"} into r->out
 * and returns status. field may be NULL. */
unsigned srv_error(srv_req *r, unsigned status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

extern const char srv_openapi_json[];

/* ---- CORS (cors.c) ----------------------------------------------------------------------- */

/* Parses --cors-origins into s->cors. 0 or PX_EINVAL naming the bad origin. */
int srv_cors_init(px_server *s, const char *list, px_err *e);
void srv_cors_free(px_server *s);
/* The request's Origin when it is allowed (valid while the request lives), else NULL. */
const char *srv_cors_origin(const px_server *s, struct MHD_Connection *conn);
/* Answers an OPTIONS preflight of url: 204, or the status of the error written. */
unsigned srv_cors_preflight(srv_req *r, struct MHD_Connection *conn, const char *url);
/* Adds the CORS headers of an answer to a request from an allowed origin. */
void srv_cors_headers(const srv_req *r, struct MHD_Response *resp);

/* ---- CDS Hooks client JWTs (jwt.c) --------------------------------------------------------- */

typedef struct srv_jwt srv_jwt;
/* Reads the CDS clients' public keys (a JWKS file: EC P-384 and RSA keys with
 * kid) and the accepted issuers (comma-separated, NULL: any). NULL with e set. */
srv_jwt *srv_jwt_new(const char *jwks_path, const char *issuers, px_err *e);
void srv_jwt_free(srv_jwt *j);   /* accepts NULL */
/* Checks a client's JWT (ES384/RS384 signature by the kid's key; iss, sub,
 * aud == audience, exp, jti not replayed). 0 with the issuer in iss_out, or -1
 * with the reason (no secret in it) in why. Thread-safe. */
int srv_jwt_check(srv_jwt *j, const char *token, const char *audience, char *iss_out, size_t iss_len, char *why,
                  size_t whylen);
/* The replay cache behind srv_jwt_check (exposed for tests/unit/test_jwt_cache.c):
 * records iss and jti until exp (Unix seconds) at time now; 0, -1 a replay (seen and
 * not expired), -2 the cache holds its limit of unexpired values. */
int srv_jwt_jti_record(srv_jwt *j, const char *iss, const char *jti, int64_t exp, int64_t now);
/* How many values the cache holds, and how many times it dropped the expired. */
void srv_jwt_jti_stats(srv_jwt *j, size_t *held, unsigned long *purges);

/* ---- answers (reply.c) --------------------------------------------------------------- */

/* Queues r->out with status and the route's headers; the body stays owned by r. */
enum MHD_Result srv_respond(struct MHD_Connection *conn, srv_req *r, unsigned status);
/* A static 503 for a request without a struct (out of memory). */
enum MHD_Result srv_respond_oom(struct MHD_Connection *conn);

/* ---- numbers (numfmt.c) ---------------------------------------------------------------- */

/* Shortest round-trip decimal of a double into out (at least 32 bytes); JSON-safe
 * (non-finite values become null). Returns the length. */
size_t srv_fmt_double(char *out, double v);
/* Six significant digits into out (at least 32 bytes), null when not finite. */
size_t srv_fmt6(char *out, double v);

/* ---- connections (conn.c) and the request lifecycle (request.c) ------------------------ */

/* Sets c's state: waiting (for a request head: evictable) and its deadline (0: none). */
void srv_conn_set(srv_conn *c, int waiting, uint64_t deadline_us);
srv_conn *srv_conn_of(struct MHD_Connection *conn);
void srv_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe);
int srv_set_cloexec_nonblock(int fd);
void *srv_acceptor_main(void *arg);
/* libmicrohttpd's own connection limit for ours (room for cut connections). */
unsigned srv_mhd_limit(unsigned ours);
int srv_conn_tables_init(px_server *s, px_err *e);
void srv_conn_free_all(px_server *s);
void *srv_on_uri(void *cls, const char *uri, struct MHD_Connection *conn);
void srv_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe);
void srv_on_mhd_log(void *cls, const char *fmt, va_list ap);
enum MHD_Result srv_on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls);
/* Frees the calling thread's cache of request structs (the thread that stops the daemon). */
void srv_req_cache_flush(void);

#endif
