/* conn.c: the connections. An acceptor thread takes every connection and hands
 * it to libmicrohttpd's workers; each one is tracked here with a deadline that
 * the acceptor's sweep enforces, and admission decides who makes room when the
 * server or an address is full (see "deadlines and admission" below). */
#define _GNU_SOURCE /* memmem */
#include "serve/internal.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- connections: deadlines and admission ---------------------------------------------
 *
 * libmicrohttpd's idle timeout restarts on every byte, so a client sending one
 * header line every few seconds would hold a connection for ever, and enough of
 * them fill the server. Every connection the acceptor hands over is tracked here
 * (in accept order, and by socket) with a deadline: its request head must be
 * complete --request-timeout after it was accepted (after its previous answer plus
 * the idle timeout, on a kept-alive connection); a body gets the request's own 408
 * at the deadline and is cut at twice it; an answer must be sent within it. The
 * acceptor sweeps the list every 100 ms and cuts overdue connections with
 * shutdown(2): libmicrohttpd then sees the peer gone and closes the socket itself
 * (closing it here would race with its use of the descriptor). An entry leaves the
 * list in the close notification, before libmicrohttpd closes the socket, and the
 * list's mutex is held around every shutdown, so a socket is never shut down after
 * its number was reused.
 *
 * Admission: when an address has --max-per-ip connections, its oldest connection
 * waiting for a request head (a slow client, or an idle kept-alive one) makes room
 * for the new one; when the server has --max-connections, the oldest waiting
 * connection of the address holding the most makes room, but only for an address
 * holding at least two fewer (so that a few addresses cannot crowd out the others,
 * and equal shares do not churn); failing that (many addresses holding a few
 * each), the connection waiting longest makes room if it has waited a quarter of
 * the deadline (a client sends its head at once) and the new connection's address holds
 * less than an even share. A connection whose whole head is
 * queued unread is neither evicted nor cut (conn_head_queued). A connection that no one makes room for is
 * answered 503 and closed. libmicrohttpd's own limits are set above these, as a
 * backstop, with room for the connections cut and not yet closed. */
typedef struct srv_conn {
    struct srv_conn *prev, *next;
    int fd;
    uint32_t addr;             /* IPv4, network order */
    int started;               /* libmicrohttpd announced it (its socket context is set) */
    int cut;                   /* shut down by us; closing */
    atomic_int waiting;        /* 1: no request head in progress (evictable) */
    atomic_ullong since_us;    /* monotonic: when it began waiting */
    atomic_ullong deadline_us; /* monotonic; 0: none */
} srv_conn;

void srv_conn_set(srv_conn *c, int waiting, uint64_t deadline_us)
{
    if (!c) return;
    if (waiting) atomic_store_explicit(&c->since_us, srv_mono_us(), memory_order_relaxed);
    atomic_store_explicit(&c->waiting, waiting, memory_order_relaxed);
    atomic_store_explicit(&c->deadline_us, deadline_us, memory_order_relaxed);
}

static void conn_unlink(px_server *s, srv_conn *c)
{
    if (c->prev) c->prev->next = c->next;
    else s->conn_head = c->next;
    if (c->next) c->next->prev = c->prev;
    else s->conn_tail = c->prev;
    if (c->fd >= 0 && (size_t)c->fd < s->conn_by_fd_n && s->conn_by_fd[c->fd] == c) s->conn_by_fd[c->fd] = NULL;
    if (!c->cut) s->conn_live--;
}

/* Cuts c (conn_mu held). */
static void conn_cut(px_server *s, srv_conn *c)
{
    c->cut = 1;
    s->conn_live--;
    shutdown(c->fd, SHUT_RDWR);
    atomic_fetch_add_explicit(&s->conn_cut, 1, memory_order_relaxed);
}

/* The per-address count slot of addr in the scratch table (conn_mu held). */
static unsigned *ip_slot(px_server *s, uint32_t addr)
{
    size_t m = s->conn_ip_n - 1, i = (size_t)(addr * 2654435761u) & m;
    while (s->conn_ip_count[i] && s->conn_ip_key[i] != addr) i = (i + 1) & m;
    s->conn_ip_key[i] = addr;
    return &s->conn_ip_count[i];
}

/* 1 when c's client has sent a whole request head that libmicrohttpd has not read
 * yet (an empty line in the socket's receive queue): a client waiting for a busy
 * worker, not a slow one. A starved server (the machine loaded, its workers behind by
 * seconds) would otherwise count its own lag against such a client, evict it as the
 * connection waiting longest and cut it at the deadline; a slow client never has a
 * whole head queued. Over TLS the queue holds records, not the head: 0 there (conn_mu
 * held, so the descriptor is still c's). */
static int conn_head_queued(const px_server *s, const srv_conn *c)
{
    if (s->tls_cert_pem || !atomic_load(&c->waiting)) return 0;
    char buf[8192];
    ssize_t n = recv(c->fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    return n >= 4 && memmem(buf, (size_t)n, "\r\n\r\n", 4) != NULL;
}

/* Makes room for a connection from addr, evicting one if the policy above allows.
 * Returns 0 when it may be handed over, -1 to refuse it (conn_mu held). */
static int conn_admit(px_server *s, uint32_t addr)
{
    unsigned live = 0, closing = 0, addrs = 0;
    memset(s->conn_ip_count, 0, s->conn_ip_n * sizeof *s->conn_ip_count);
    for (srv_conn *c = s->conn_head; c; c = c->next) {
        if (c->cut) {
            closing++;
            continue;
        }
        unsigned *n = ip_slot(s, c->addr);
        if (!*n) addrs++;
        ++*n, live++;
    }
    /* connections cut and not yet closed still count against libmicrohttpd's limit: a
     * starved server's workers close them late, and a connection handed over past that
     * limit would be closed by libmicrohttpd without an answer (a reset at the client) */
    if (live + closing + 1 > srv_mhd_limit(s->p.max_connections)) return -1;
    unsigned mine = *ip_slot(s, addr);
    srv_conn *victim = NULL;
    unsigned vcount = 0;
    if (mine >= s->p.max_per_ip) {
        for (srv_conn *c = s->conn_head; c && !victim; c = c->next)
            if (!c->cut && c->started && c->addr == addr && atomic_load(&c->waiting) && !conn_head_queued(s, c))
                victim = c;
    } else if (live >= s->p.max_connections) {
        for (srv_conn *c = s->conn_head; c; c = c->next) {
            if (c->cut || !c->started || !atomic_load(&c->waiting)) continue;
            unsigned n = *ip_slot(s, c->addr);
            if (n > vcount && !conn_head_queued(s, c)) victim = c, vcount = n; /* the oldest of the address holding most */
        }
        if (victim && vcount < mine + 2) victim = NULL;
        /* many addresses with a few each: the one waiting longest, if it is slow, and only for an
         * address holding less than an even share (a slowloris from a few addresses holding their
         * share each would otherwise evict its own connections in a loop as fast as it reconnects,
         * and a starved server falls behind closing them) */
        if (!victim && (uint64_t)mine * (addrs + (mine == 0)) < live) {
            uint64_t oldest = srv_mono_us() - (uint64_t)s->p.request_timeout_ms * 250u; /* a quarter of it */
            for (srv_conn *c = s->conn_head; c; c = c->next) {
                if (c->cut || !c->started || !atomic_load(&c->waiting)) continue;
                uint64_t since = atomic_load_explicit(&c->since_us, memory_order_relaxed);
                if (since <= oldest && !conn_head_queued(s, c)) victim = c, oldest = since;
            }
        }
    } else
        return 0;
    if (!victim) return -1;
    conn_cut(s, victim);
    atomic_fetch_add_explicit(&s->conn_evicted, 1, memory_order_relaxed);
    return 0;
}

/* Cuts every connection past its deadline (the acceptor, every 100 ms). */
static void conn_sweep(px_server *s)
{
    uint64_t now = srv_mono_us();
    pthread_mutex_lock(&s->conn_mu);
    for (srv_conn *c = s->conn_head; c; c = c->next) {
        uint64_t d = atomic_load_explicit(&c->deadline_us, memory_order_relaxed);
        if (!c->cut && c->started && d && now > d && !conn_head_queued(s, c)) conn_cut(s, c);
    }
    pthread_mutex_unlock(&s->conn_mu);
}

/* Answers a connection that no one made room for, and closes it: it was never
 * handed to libmicrohttpd, so the socket is ours. */
static void conn_refuse(px_server *s, int fd)
{
    static const char body[] = "{\"error\":{\"code\":\"too_many_connections\",\"message\":\"the server is full\"},"
                               "\"request_id\":\"\"}\n";
    char msg[320];
    int len = snprintf(msg, sizeof msg,
                       "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       "Retry-After: 1\r\nContent-Length: %zu\r\n\r\n%s",
                       sizeof body - 1, body);
    if (!s->tls_cert_pem) { /* a TLS client would read plain text as garbage: closed only */
        ssize_t n = send(fd, msg, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    }
    close(fd);
    atomic_fetch_add_explicit(&s->conn_refused, 1, memory_order_relaxed);
}

/* Tracks fd and hands it to libmicrohttpd (the acceptor). */
static void conn_hand_over(px_server *s, int fd, const struct sockaddr_in *addr, socklen_t alen)
{
    if ((size_t)fd >= s->conn_by_fd_n) { /* cannot be tracked: refused rather than unbounded */
        conn_refuse(s, fd);
        return;
    }
    srv_conn *c = calloc(1, sizeof *c);
    if (!c) {
        conn_refuse(s, fd);
        return;
    }
    c->fd = fd;
    c->addr = addr->sin_addr.s_addr;
    srv_conn_set(c, 1, srv_mono_us() + (uint64_t)s->p.request_timeout_ms * 1000u);
    pthread_mutex_lock(&s->conn_mu);
    srv_conn *stale = s->conn_by_fd[fd]; /* libmicrohttpd closed it without announcing it */
    if (stale && !stale->started) {
        conn_unlink(s, stale);
        free(stale);
    }
    if (conn_admit(s, c->addr) != 0) {
        pthread_mutex_unlock(&s->conn_mu);
        free(c);
        conn_refuse(s, fd);
        return;
    }
    c->prev = s->conn_tail;
    if (s->conn_tail) s->conn_tail->next = c;
    else s->conn_head = c;
    s->conn_tail = c;
    s->conn_by_fd[fd] = c;
    s->conn_live++;
    pthread_mutex_unlock(&s->conn_mu);
    /* refused (its own limits) or not, libmicrohttpd closes the socket */
    if (MHD_add_connection(s->d, fd, (const struct sockaddr *)addr, alen) != MHD_YES) {
        pthread_mutex_lock(&s->conn_mu);
        if (s->conn_by_fd[fd] == c && !c->started) {
            conn_unlink(s, c);
            free(c);
        }
        pthread_mutex_unlock(&s->conn_mu);
    }
}

srv_conn *srv_conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void srv_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    px_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->metrics.connections, 1);
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        int fd = ci ? ci->connect_fd : -1;
        pthread_mutex_lock(&s->conn_mu);
        srv_conn *c = fd >= 0 && (size_t)fd < s->conn_by_fd_n ? s->conn_by_fd[fd] : NULL;
        if (c && !c->started) {
            c->started = 1;
            *socket_context = c;
        }
        pthread_mutex_unlock(&s->conn_mu);
    } else {
        atomic_fetch_sub(&s->metrics.connections, 1);
        srv_conn *c = *socket_context;
        if (c) { /* before libmicrohttpd closes the socket */
            pthread_mutex_lock(&s->conn_mu);
            conn_unlink(s, c);
            pthread_mutex_unlock(&s->conn_mu);
            free(c);
            *socket_context = NULL;
        }
    }
}

int srv_set_cloexec_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ? -1 : 0;
}

/* The acceptor. libmicrohttpd's pool workers share its listen socket and each
 * accepts up to ten connections per wake-up, so a burst of connections lands
 * mostly on one worker (measured: 55 of 64 on one of two), whose clients then
 * queue behind each other while the other worker idles. Connections accepted
 * here and given to MHD_add_connection are spread over the workers by socket
 * number (libmicrohttpd's own round robin), with its connection and per-IP
 * limits applied as before. */
void *srv_acceptor_main(void *arg)
{
    px_server *s = arg;
    struct pollfd pf[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->accept_pipe[0], .events = POLLIN}};
    uint64_t swept = srv_mono_us();
    while (!atomic_load(&s->stopping)) {
        int rc = poll(pf, 2, 100);
        if (rc < 0 && errno != EINTR) break;
        if (srv_mono_us() - swept >= 100000) {
            conn_sweep(s);
            swept = srv_mono_us();
        }
        if (rc <= 0) continue;
        if (pf[1].revents) break;
        if (!(pf[0].revents & POLLIN)) continue;
        for (;;) {
            struct sockaddr_in addr;
            socklen_t alen = sizeof addr;
            int fd = accept(s->listen_fd, (struct sockaddr *)&addr, &alen);
            if (fd >= 0 && srv_set_cloexec_nonblock(fd) != 0) {
                close(fd);
                continue;
            }
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    px_log(PX_LOG_WARN, "serve: cannot accept a connection: %s", strerror(errno));
                    poll(NULL, 0, 100); /* the backlog waits; no busy loop */
                }
                break; /* EAGAIN: all taken; anything else: the client is gone */
            }
            conn_hand_over(s, fd, &addr, alen);
        }
    }
    return NULL;
}

/* libmicrohttpd's limit for one of ours: above it by the connections that were cut
 * and are not yet closed (see "connections" above). */
unsigned srv_mhd_limit(unsigned ours)
{
    unsigned room = ours / 2 > 16 ? ours / 2 : 16;
    return ours + room;
}

/* The connection tables, sized by the descriptor limit (raised to what the
 * connection limit needs, when the hard limit allows). */
int srv_conn_tables_init(px_server *s, px_err *e)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)srv_mhd_limit(s->p.max_connections) + 128; /* the database, logs, pipes */
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return px_err_set(e, PX_EIO, "cannot read the descriptor limit");
    if (rl.rlim_cur < need && rl.rlim_max != rl.rlim_cur) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < need) /* served anyway: connections past the limit are refused at accept */
        px_log(PX_LOG_WARN, "serve: the descriptor limit (%llu) is below what %u connections need (%llu): "
               "raise it (ulimit -n) or lower --max-connections", (unsigned long long)rl.rlim_cur,
               s->p.max_connections, (unsigned long long)need);
    s->conn_by_fd_n = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1u << 20) : (size_t)rl.rlim_cur;
    size_t n = 64;
    while (n < 2 * ((size_t)srv_mhd_limit(s->p.max_connections) + 2)) n *= 2;
    s->conn_ip_n = n;
    s->conn_by_fd = calloc(s->conn_by_fd_n, sizeof *s->conn_by_fd);
    s->conn_ip_key = calloc(n, sizeof *s->conn_ip_key);
    s->conn_ip_count = calloc(n, sizeof *s->conn_ip_count);
    if (!s->conn_by_fd || !s->conn_ip_key || !s->conn_ip_count)
        return px_err_set(e, PX_ENOMEM, "out of memory starting the server");
    return 0;
}

/* Frees the tracking entries of connections handed over and never announced
 * (the daemon is stopped). */
void srv_conn_free_all(px_server *s)
{
    for (srv_conn *c = s->conn_head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    s->conn_head = s->conn_tail = NULL;
}
