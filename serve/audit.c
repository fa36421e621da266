/* audit.c: the audit trail of predictions, written off the request path.
 *
 * A request pushes one record (time, key id, model version, request id, counts;
 * no identifier of a patient or encounter) into a bounded ring and returns; one
 * thread COPYs batches to the database. A record leaves the ring only
 * after its batch committed. While the database is slow or down the ring fills;
 * when it is full, predict refuses to answer (503 audit_unavailable): the server
 * never hands out a prediction it cannot account for. A batch is one row of
 * audit.prediction_batches (parallel arrays; the view audit.predictions unnests
 * them), sent in the binary COPY format.
 *
 * Durability while the database is away: at every failed write the records
 * held and not yet spilled are appended to the spill file
 * ($PROGNOS_HOME/audit/spill.bin: append-only, fsync'd, under an exclusive
 * flock), and at shutdown whatever is still held goes there too. A record stays
 * in the ring (and counts against the queue, so predict still refuses past it)
 * until the database has it. The file is replayed when the database is
 * reachable: at the writer's first connection (the next start) and after an
 * outage. It is a sequence of chunks, each with a random chunk id and a
 * SHA-256; a chunk is replayed in one transaction that also records its id in
 * audit.spill_chunks (primary key, ON CONFLICT DO NOTHING), so a chunk already
 * replayed is skipped: a crash between the commit and the truncation of the
 * file cannot write a record twice. A torn chunk at the end (a crash while
 * appending) is left out and logged. The records carry no identifier of a
 * patient or an encounter (key id, model version, request id, counts). */
#include "serve/internal.h"
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* COPYs n records as one row of audit.prediction_batches, through engine's
 * COPY writer with the binary rows built in its buffer (b: a buffer kept
 * between batches, lent to the writer). 0, or -1 (the connection is then
 * suspect; the reason is logged). */
static int write_batch(PGconn *c, const char (*names)[64], const srv_audit_rec *recs, size_t n, px_buf *keep)
{
    px_copy_in w;
    px_err e = {0};
    if (px_copy_in_begin(&w, c,
                         "COPY audit.prediction_batches (n, at, key_id, model, version, request_id, instances,"
                         " by_encounter, latency_us) FROM STDIN (FORMAT binary)",
                         "the audit write", &e) != 0) {
        px_log(PX_LOG_WARN, "serve: audit write: %s%s%s", e.msg, e.detail[0] ? ": " : "", e.detail);
        px_copy_in_end(&w, 1, NULL, &e);
        return -1;
    }
    px_buf_release(&w.buf);
    w.buf = *keep; /* lent: taken back before px_copy_in_end releases it */
    *keep = (px_buf){0};
    px_buf *b = &w.buf;
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
    for (size_t i = 0; i < n; i++) elem_text(b, names[recs[i].model]);
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
    int bad = !b->data; /* out of memory building it */
    int rc = bad ? -1 : px_copy_in_flush(&w, 1, &e);
    *keep = w.buf; /* back to the caller */
    keep->len = 0;
    w.buf = (px_buf){0};
    if (px_copy_in_end(&w, bad || rc != 0, NULL, &e) != 0) rc = -1;
    if (rc != 0 && !bad) px_log(PX_LOG_WARN, "serve: audit write: %s%s%s", e.msg, e.detail[0] ? ": " : "", e.detail);
    return rc != 0 || bad ? -1 : 0;
}

/* ---- the spill file ------------------------------------------------------------------ */

#define SPILL_MAGIC "PXAUDSP1"
#define SPILL_REC 116 /* at_us 8, request_id 16, key_id 12, model 64, version, instances, by_encounter, latency_us 4 each */
#define SPILL_HEAD (8 + 16 + 4)
#define SPILL_NAMES SRV_MAX_MODELS /* distinct model names in one chunk (the server's names) */

static void le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void spill_path(const srv_audit *a, char *out, size_t n)
{
    snprintf(out, n, "%s/audit/spill.bin", a->cfg->home);
}

/* Opens (creating) the spill file and takes its exclusive lock: one writer or
 * replayer at a time, also across servers sharing a home. -1 on failure (logged). */
static int spill_open(const srv_audit *a)
{
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/audit", a->cfg->home);
    px_err e = {0};
    if (px_mkdir_p(dir, 0700, &e) != 0) {
        px_log(PX_LOG_ERROR, "serve: audit spill: %s", e.msg);
        return -1;
    }
    spill_path(a, path, sizeof path);
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
        errno = EINVAL;
    }
    if (fd < 0) {
        px_log(PX_LOG_ERROR, "serve: audit spill: cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0)
        if (errno != EINTR) {
            px_log(PX_LOG_ERROR, "serve: audit spill: cannot lock '%s': %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
    const unsigned char *q = p;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Appends recs[0..n) as chunks of at most AUDIT_BATCH records and fsyncs. Returns
 * 0 when every record is on disk, -1 otherwise (then none is counted as spilled:
 * a torn chunk is left out at replay, and a whole one is skipped by its id if it
 * is appended again). */
static int spill_append(srv_audit *a, const srv_audit_rec *recs, size_t n)
{
    if (n == 0) return 0;
    int fd = spill_open(a);
    if (fd < 0) return -1;
    int rc = 0;
    struct stat st;
    off_t orig = fstat(fd, &st) == 0 ? st.st_size : -1;
    unsigned char *buf = malloc(SPILL_HEAD + (size_t)AUDIT_BATCH * SPILL_REC + 32);
    if (!buf || orig < 0) rc = -1;
    for (size_t off = 0; rc == 0 && off < n;) {
        size_t k = n - off < AUDIT_BATCH ? n - off : AUDIT_BATCH;
        unsigned char *p = buf;
        memcpy(p, SPILL_MAGIC, 8);
        if (RAND_bytes(p + 8, 16) != 1) {
            rc = -1;
            break;
        }
        le32(p + 24, (uint32_t)k);
        p += SPILL_HEAD;
        for (size_t i = 0; i < k; i++, p += SPILL_REC) {
            const srv_audit_rec *r = &recs[off + i];
            memset(p, 0, SPILL_REC);
            le32(p, (uint32_t)r->at_us);
            le32(p + 4, (uint32_t)(r->at_us >> 32));
            memcpy(p + 8, r->request_id, 16);
            memcpy(p + 24, r->key_id, 12);
            snprintf((char *)p + 36, 64, "%s", a->names[r->model]);
            le32(p + 100, (uint32_t)r->version);
            le32(p + 104, r->instances);
            le32(p + 108, r->by_encounter);
            le32(p + 112, r->latency_us);
        }
        size_t len = (size_t)(p - buf);
        unsigned int mdlen = 0;
        EVP_Digest(buf, len, p, &mdlen, EVP_sha256(), NULL);
        if (mdlen != 32 || write_all(fd, buf, len + 32) != 0) rc = -1;
        off += k;
    }
    if (rc == 0 && fdatasync(fd) != 0) rc = -1;
    if (rc != 0) {
        px_log(PX_LOG_ERROR, "serve: audit spill: cannot append %zu records: %s", n, strerror(errno));
        /* no torn chunk left behind for a later append to follow */
        if (orig >= 0 && ftruncate(fd, orig) == 0) (void)fdatasync(fd);
    }
    free(buf);
    close(fd); /* releases the lock */
    return rc;
}

/* Replays one chunk (k records at p) in a transaction with its id recorded in
 * audit.spill_chunks; a chunk whose id is there already is skipped. 0, -1 (the
 * database refused; try again later) or 1 (the chunk is not ours: left out). */
static int replay_chunk(PGconn *c, const unsigned char *id, const unsigned char *p, size_t k, srv_audit_rec *recs,
                        px_buf *b, int *skipped)
{
    char names[SPILL_NAMES][64];
    size_t nn = 0;
    for (size_t i = 0; i < k; i++, p += SPILL_REC) {
        srv_audit_rec *r = &recs[i];
        r->at_us = (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
        memcpy(r->request_id, p + 8, 16);
        memcpy(r->key_id, p + 24, 12);
        char name[64];
        memcpy(name, p + 36, 64);
        name[63] = '\0';
        size_t j = 0;
        while (j < nn && strcmp(names[j], name) != 0) j++;
        if (j == nn) {
            if (nn == SPILL_NAMES) return 1; /* not written by a server: left out */
            memcpy(names[nn++], name, 64);
        }
        r->model = (uint16_t)j;
        r->version = (int32_t)rd32(p + 100);
        r->instances = rd32(p + 104);
        r->by_encounter = rd32(p + 108);
        r->latency_us = rd32(p + 112);
    }
    char uuid[37];
    static const char hx[] = "0123456789abcdef";
    for (int i = 0, o = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) uuid[o++] = '-';
        uuid[o++] = hx[id[i] >> 4];
        uuid[o++] = hx[id[i] & 15];
        uuid[o] = '\0';
    }
    char nk[16];
    snprintf(nk, sizeof nk, "%zu", k);
    const char *pv[2] = {uuid, nk};
    PGresult *r = PQexec(c, "BEGIN");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) return -1;
    r = PQexecParams(c, "INSERT INTO audit.spill_chunks (chunk_id, n) VALUES ($1::uuid, $2::integer)"
                        " ON CONFLICT (chunk_id) DO NOTHING", 2, NULL, pv, NULL, NULL, 0);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) px_log(PX_LOG_WARN, "serve: audit spill replay: %s", PQresultErrorMessage(r));
    *skipped = ok && strcmp(PQcmdTuples(r), "0") == 0;
    PQclear(r);
    if (ok && !*skipped) ok = write_batch(c, (const char(*)[64])names, recs, k, b) == 0;
    r = PQexec(c, ok ? "COMMIT" : "ROLLBACK");
    if (ok && PQresultStatus(r) != PGRES_COMMAND_OK) ok = 0;
    PQclear(r);
    return ok ? 0 : -1;
}

/* The offset of the next chunk magic at or after from, or size. */
static off_t find_magic(int fd, off_t from, off_t size)
{
    unsigned char blk[65536];
    while (from < size) {
        ssize_t got = pread(fd, blk, sizeof blk, from);
        if (got < 8) return size;
        for (ssize_t i = 0; i + 8 <= got; i++)
            if (blk[i] == 'P' && memcmp(blk + i, SPILL_MAGIC, 8) == 0) return from + i;
        from += got - 7;
    }
    return size;
}

/* Replays the spill file through c, then empties it. 0 when the file is empty
 * afterwards (every chunk is in the database), -1 otherwise (the file stays:
 * the next replay skips what this one committed). */
static int spill_replay(srv_audit *a, PGconn *c, px_buf *b)
{
    char path[4300];
    spill_path(a, path, sizeof path);
    struct stat st;
    if (lstat(path, &st) != 0 && errno == ENOENT) return 0;
    int fd = spill_open(a);
    if (fd < 0) return -1;
    int rc = 0;
    size_t replayed = 0, skipped = 0, chunks = 0;
    unsigned char *buf = malloc(SPILL_HEAD + (size_t)AUDIT_BATCH * SPILL_REC + 32);
    srv_audit_rec *recs = malloc(AUDIT_BATCH * sizeof *recs);
    off_t at = 0, size = fstat(fd, &st) == 0 ? st.st_size : -1;
    if (!buf || !recs || size < 0) rc = -1;
    off_t torn = 0;
    while (rc == 0 && at < size) {
        size_t k = 0, len = 0;
        int whole = size - at >= SPILL_HEAD + 32 && pread(fd, buf, SPILL_HEAD, at) == SPILL_HEAD &&
                    memcmp(buf, SPILL_MAGIC, 8) == 0;
        if (whole) {
            k = rd32(buf + 24);
            len = SPILL_HEAD + k * SPILL_REC;
            whole = k > 0 && k <= AUDIT_BATCH && (off_t)(len + 32) <= size - at &&
                    pread(fd, buf + SPILL_HEAD, len - SPILL_HEAD + 32, at + SPILL_HEAD) == (ssize_t)(len - SPILL_HEAD + 32);
        }
        if (whole) {
            unsigned char md[32];
            unsigned int mdlen = 0;
            EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL);
            whole = mdlen == 32 && memcmp(md, buf + len, 32) == 0;
        }
        int skip = 0, r = whole ? replay_chunk(c, buf + 8, buf + SPILL_HEAD, k, recs, b, &skip) : 1;
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r > 0) {
            /* a torn chunk (a crash while appending): go on at the next chunk's start */
            off_t next = find_magic(fd, at + 1, size);
            torn += next - at;
            at = next;
            continue;
        }
        if (skip) skipped += k;
        else replayed += k;
        chunks++;
        at += (off_t)(len + 32);
    }
    if (rc == 0 && torn)
        px_log(PX_LOG_ERROR, "serve: audit spill: %lld bytes of '%s' are not a whole chunk (a write cut short);"
                             " left out", (long long)torn, path);
    if (rc == 0 && (ftruncate(fd, 0) != 0 || fsync(fd) != 0)) {
        px_log(PX_LOG_ERROR, "serve: audit spill: cannot empty '%s': %s", path, strerror(errno));
        rc = -1;
    }
    if (chunks)
        px_log(PX_LOG_INFO, "serve: audit spill: %zu records replayed from '%s' (%zu already in the database)",
               replayed, path, skipped);
    free(buf);
    free(recs);
    close(fd);
    return rc;
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

/* Copies ring records [from, from + n) (offsets from head) into out. Called without the
 * lock: pushers write only past head + count, and nothing but this thread moves
 * head, so these slots stay as they are. */
static void ring_copy(const srv_audit *a, size_t head, size_t from, size_t n, srv_audit_rec *out)
{
    size_t at = (head + from) % a->cap, first = a->cap - at < n ? a->cap - at : n;
    memcpy(out, a->ring + at, first * sizeof *out);
    memcpy(out + first, a->ring, (n - first) * sizeof *out);
}

/* Appends ring records [from, to) to the spill file, AUDIT_BATCH at a time
 * through buf. Returns how many are on disk (from on failure: none counted). */
static size_t spill_ring(srv_audit *a, size_t head, size_t from, size_t to, srv_audit_rec *buf)
{
    for (size_t at = from; at < to;) {
        size_t k = to - at < AUDIT_BATCH ? to - at : AUDIT_BATCH;
        ring_copy(a, head, at, k, buf);
        if (spill_append(a, buf, k) != 0) return at;
        at += k;
    }
    return to;
}

static void *audit_main(void *arg)
{
    srv_audit *a = arg;
    srv_audit_rec *batch = malloc(AUDIT_BATCH * sizeof *batch);
    px_buf b = {0};
    PGconn *c = NULL;
    unsigned backoff = 0;
    uint64_t grace_until = 0;
    /* spilled: the first records of the ring, from head, that are in the spill file
     * (they leave the ring when the file has been replayed); need_replay: the file
     * may hold records (an earlier process's, or ours) */
    size_t spilled = 0;
    int need_replay = 1;
    if (!batch) return NULL;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->count == 0 && !need_replay) pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop && a->count == 0 && !need_replay) break;
        if (a->stop && !grace_until) grace_until = srv_mono_us() + (uint64_t)a->flush_ms * 1000u;
        if (a->stop && srv_mono_us() > grace_until) break;
        /* let a batch gather unless it is large already */
        if (!a->stop && !need_replay && a->count < AUDIT_BATCH / 4) timed_wait(a, a->flush_ms);
        size_t count = a->count, head = a->head;
        pthread_mutex_unlock(&a->mu);

        if (!c) c = audit_connect(a);
        int ok = c != NULL;
        size_t done = 0; /* records that left the ring's front */
        if (ok && need_replay) {
            ok = spill_replay(a, c, &b) == 0;
            if (ok) {
                need_replay = 0;
                done = spilled; /* in the database now, through the file */
                spilled = 0;
            }
        }
        size_t n = count - done < AUDIT_BATCH ? count - done : AUDIT_BATCH;
        if (ok && n > 0) {
            ring_copy(a, head, done, n, batch);
            ok = write_batch(c, a->names, batch, n, &b) == 0;
            if (ok) done += n;
        }
        if (!ok && c) {
            PQfinish(c);
            c = NULL;
        }
        if (!ok && count > spilled) {
            /* the database is away: what is held goes to disk, so that a stop or a crash loses none of it */
            size_t to = spill_ring(a, head, spilled, count, batch);
            if (to > spilled) need_replay = 1;
            spilled = to;
        }
        pthread_mutex_lock(&a->mu);
        if (done) {
            a->head = (a->head + done) % a->cap;
            a->count -= done;
            atomic_fetch_add(&a->metrics->audit_written, done);
        }
        if (ok) {
            if (!atomic_load(&a->db_ok)) px_log(PX_LOG_INFO, "serve: audit writes resumed");
            atomic_store(&a->db_ok, 1);
            backoff = 0;
        } else {
            atomic_fetch_add(&a->metrics->audit_write_errors, 1);
            if (atomic_exchange(&a->db_ok, 0))
                px_log(PX_LOG_WARN, "serve: cannot write audit records; holding them (and spilling them to disk)");
            /* stopping, and everything held is on disk: nothing more to wait for */
            if (a->stop && a->count == spilled) break;
            backoff = backoff ? (backoff * 2 > 5000 ? 5000 : backoff * 2) : 200;
            if (!a->stop) timed_wait(a, backoff);
            else timed_wait(a, 100);
        }
    }
    size_t count = a->count, head = a->head;
    pthread_mutex_unlock(&a->mu);
    /* the grace period is over: whatever is held and not yet on disk goes there now */
    size_t to = count > spilled ? spill_ring(a, head, spilled, count, batch) : spilled;
    if (to > 0) {
        char path[4300];
        spill_path(a, path, sizeof path);
        px_log(PX_LOG_WARN, "serve: %zu audit records are in '%s'; they are written when the database is back"
                            " (the next start)", to, path);
    }
    if (count > to) {
        atomic_fetch_add(&a->metrics->audit_lost, count - to);
        px_log(PX_LOG_ERROR, "serve: %zu audit records could not be written or spilled before shutdown", count - to);
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
