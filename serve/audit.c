/* audit.c: the audit trail of predictions, written off the request path.
 *
 * A request pushes one record (time, key id, model version, request id, counts;
 * no identifier of a patient or encounter) into a bounded ring and returns; one
 * thread COPYs batches to the database. A record leaves the ring only
 * after its batch committed. While the database is slow or down the ring fills;
 * when it is full, predict refuses to answer (503 audit_unavailable): the server
 * never hands out a prediction it cannot account for. A batch is one row of
 * audit.prediction_batches (parallel arrays; the view audit.predictions unnests
 * them), sent in the binary COPY format. At shutdown the writer
 * keeps trying for a grace period and logs how many records it could not write. */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AUDIT_BATCH 16384

/* Binary COPY (the PostgreSQL COPY binary format): no text parsing of
 * timestamps and integers in the server, which at thousands of rows a second is
 * most of what writing them costs. */
static void put16(px_buf *b, uint16_t v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    px_buf_add(b, x, 2);
}

static void put32(px_buf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    px_buf_add(b, x, 4);
}

/* A one-dimensional array without NULLs of n elements of type oid (binary array
 * format: ndim, has-null flag, element type, then size and lower bound, then each
 * element as length + bytes). elem(b, i) appends element i without its length
 * word; its size is given by fixed (or measured when fixed is 0). */
#define OID_INT4 23
#define OID_TEXT 25
#define OID_TIMESTAMPTZ 1184
#define OID_UUID 2950

static size_t array_start(px_buf *b, uint32_t oid, size_t n)
{
    size_t at = b->len;
    put32(b, 0); /* the field's length, filled in by array_end */
    put32(b, 1);
    put32(b, 0);
    put32(b, oid);
    put32(b, (uint32_t)n);
    put32(b, 1);
    return at;
}

static void array_end(px_buf *b, size_t at)
{
    if (!b->data) return;
    uint32_t len = (uint32_t)(b->len - at - 4);
    unsigned char *p = (unsigned char *)b->data + at;
    p[0] = (unsigned char)(len >> 24);
    p[1] = (unsigned char)(len >> 16);
    p[2] = (unsigned char)(len >> 8);
    p[3] = (unsigned char)len;
}

static void elem_int4(px_buf *b, int32_t v)
{
    put32(b, 4);
    put32(b, (uint32_t)v);
}

static void elem_text(px_buf *b, const char *s)
{
    size_t n = strlen(s);
    put32(b, (uint32_t)n);
    px_buf_add(b, s, n);
}

/* timestamptz: microseconds since 2000-01-01 00:00:00 UTC */
static void elem_time(px_buf *b, uint64_t unix_us)
{
    int64_t pg = (int64_t)unix_us - 946684800000000LL;
    put32(b, 8);
    put32(b, (uint32_t)((uint64_t)pg >> 32));
    put32(b, (uint32_t)pg);
}

static void elem_bytes(px_buf *b, const void *p, size_t n)
{
    put32(b, (uint32_t)n);
    px_buf_add(b, p, n);
}

/* COPYs n records as one row of audit.prediction_batches. 0, or -1 (the
 * connection is then suspect). */
static int write_batch(PGconn *c, const srv_audit *a, const srv_audit_rec *recs, size_t n, px_buf *b)
{
    b->len = 0;
    px_buf_reserve(b, 128 + n * 120);
    px_buf_add(b, "PGCOPY\n\377\r\n\0", 11);
    put32(b, 0); /* flags */
    put32(b, 0); /* header extension */
    put16(b, 9); /* fields */
    put32(b, 4);
    put32(b, (uint32_t)n);
    size_t at = array_start(b, OID_TIMESTAMPTZ, n);
    for (size_t i = 0; i < n; i++) elem_time(b, recs[i].at_us);
    array_end(b, at);
    at = array_start(b, OID_TEXT, n);
    for (size_t i = 0; i < n; i++) elem_bytes(b, recs[i].key_id, sizeof recs[i].key_id);
    array_end(b, at);
    at = array_start(b, OID_TEXT, n);
    for (size_t i = 0; i < n; i++) elem_text(b, a->names[recs[i].model]);
    array_end(b, at);
    at = array_start(b, OID_INT4, n);
    for (size_t i = 0; i < n; i++) elem_int4(b, recs[i].version);
    array_end(b, at);
    at = array_start(b, OID_UUID, n);
    for (size_t i = 0; i < n; i++) elem_bytes(b, recs[i].request_id, 16); /* uuid: 16 bytes */
    array_end(b, at);
    at = array_start(b, OID_INT4, n);
    for (size_t i = 0; i < n; i++) elem_int4(b, (int32_t)recs[i].instances);
    array_end(b, at);
    at = array_start(b, OID_INT4, n);
    for (size_t i = 0; i < n; i++) elem_int4(b, (int32_t)recs[i].by_encounter);
    array_end(b, at);
    at = array_start(b, OID_INT4, n);
    for (size_t i = 0; i < n; i++) elem_int4(b, (int32_t)recs[i].latency_us);
    array_end(b, at);
    put16(b, 0xffff);
    if (!b->data) return -1;
    PGresult *res = PQexec(c, "COPY audit.prediction_batches (n, at, key_id, model, version, request_id, instances,"
                              " by_encounter, latency_us) FROM STDIN (FORMAT binary)");
    int ok = PQresultStatus(res) == PGRES_COPY_IN;
    PQclear(res);
    if (!ok) return -1;
    if (PQputCopyData(c, b->data, (int)b->len) != 1 || PQputCopyEnd(c, NULL) != 1) return -1;
    ok = 1;
    while ((res = PQgetResult(c)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            ok = 0;
            px_log(PX_LOG_WARN, "serve: audit write: %s", PQresultErrorMessage(res));
        }
        PQclear(res);
    }
    return ok ? 0 : -1;
}

static PGconn *audit_connect(srv_audit *a)
{
    px_err e = {0};
    return srv_db_open(a->cfg, "prognos audit", 10000, &e);
}

static void timed_wait(srv_audit *a, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&a->cv, &a->mu, &ts);
}

static void *audit_main(void *arg)
{
    srv_audit *a = arg;
    srv_audit_rec *batch = malloc(AUDIT_BATCH * sizeof *batch);
    px_buf b = {0};
    PGconn *c = NULL;
    unsigned backoff = 0;
    uint64_t grace_until = 0;
    if (!batch) return NULL;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->count == 0) pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop && a->count == 0) break;
        if (a->stop && !grace_until) grace_until = srv_mono_us() + (uint64_t)a->flush_ms * 1000u;
        if (a->stop && srv_mono_us() > grace_until) break;
        /* let a batch gather unless it is large already */
        if (!a->stop && a->count < AUDIT_BATCH / 4) timed_wait(a, a->flush_ms);
        size_t n = a->count < AUDIT_BATCH ? a->count : AUDIT_BATCH;
        for (size_t i = 0; i < n; i++) batch[i] = a->ring[(a->head + i) % a->cap];
        pthread_mutex_unlock(&a->mu);

        int ok = 0;
        if (n > 0) {
            if (!c) c = audit_connect(a);
            ok = c && write_batch(c, a, batch, n, &b) == 0;
            if (!ok && c) {
                PQfinish(c);
                c = NULL;
            }
        }
        pthread_mutex_lock(&a->mu);
        if (ok) {
            a->head = (a->head + n) % a->cap;
            a->count -= n;
            atomic_fetch_add(&a->metrics->audit_written, n);
            if (!atomic_load(&a->db_ok)) px_log(PX_LOG_INFO, "serve: audit writes resumed");
            atomic_store(&a->db_ok, 1);
            backoff = 0;
        } else if (n > 0) {
            atomic_fetch_add(&a->metrics->audit_write_errors, 1);
            if (atomic_exchange(&a->db_ok, 0)) px_log(PX_LOG_WARN, "serve: cannot write audit records; holding them");
            backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 200;
            if (!a->stop) timed_wait(a, backoff);
            else timed_wait(a, 100);
        }
    }
    size_t lost = a->count;
    pthread_mutex_unlock(&a->mu);
    if (lost) {
        atomic_fetch_add(&a->metrics->audit_lost, lost);
        px_log(PX_LOG_ERROR, "serve: %zu audit records could not be written before shutdown", lost);
    }
    if (c) PQfinish(c);
    px_buf_release(&b);
    free(batch);
    return NULL;
}

int srv_audit_start(srv_audit *a, const px_config *cfg, size_t cap, unsigned flush_ms, srv_metrics *m,
                    const char (*names)[64], px_err *e)
{
    memset(a, 0, sizeof *a);
    if (!(a->ring = malloc(cap * sizeof *a->ring)))
        return px_err_set(e, PX_ENOMEM, "out of memory for an audit queue of %zu records", cap);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->cap = cap;
    a->flush_ms = flush_ms ? flush_ms : 200;
    a->cfg = cfg;
    a->metrics = m;
    a->names = names;
    atomic_store(&a->db_ok, 1);
    if (pthread_create(&a->th, NULL, audit_main, a) != 0) {
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        free(a->ring);
        a->ring = NULL;
        return px_err_set(e, PX_EIO, "cannot start the audit thread");
    }
    a->started = 1;
    return 0;
}

int srv_audit_push(srv_audit *a, const srv_audit_rec *r)
{
    pthread_mutex_lock(&a->mu);
    if (a->count >= a->cap || a->stop) {
        pthread_mutex_unlock(&a->mu);
        atomic_fetch_add(&a->metrics->audit_rejected, 1);
        return -1;
    }
    a->ring[(a->head + a->count) % a->cap] = *r;
    a->count++;
    int wake = a->count == 1 || a->count == AUDIT_BATCH / 4;
    if (a->count > atomic_load(&a->backlog_peak)) atomic_store(&a->backlog_peak, a->count);
    pthread_mutex_unlock(&a->mu);
    if (wake) pthread_cond_signal(&a->cv);
    return 0;
}

size_t srv_audit_depth(srv_audit *a)
{
    if (!a->started) return 0;
    pthread_mutex_lock(&a->mu);
    size_t n = a->count;
    pthread_mutex_unlock(&a->mu);
    return n;
}

void srv_audit_stop(srv_audit *a, unsigned grace_ms)
{
    if (!a->started) return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    a->flush_ms = grace_ms;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->th, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a->ring);
    a->ring = NULL;
    a->started = 0;
}
