/* The benchmark's floor for libmicrohttpd: the same library with the daemon flags
 * and the pool, memory and timeout options of `prognos serve` (epoll, a pool of
 * workers, turbo, an 8 KiB connection pool, connections accepted by one thread and
 * handed to the workers with MHD_add_connection), but no callbacks besides the
 * handler and one response shared by all requests, answering every request with one fixed
 * body, as nginx does in the benchmark. No routing, no JSON, no model, no
 * audit: what is left is libmicrohttpd's own cost per request, the least any
 * server on it can spend.
 *   usage: mhd_static PORT THREADS BODY_FILE [MODE]   (MODE epoll (default), poll or tpc:
 *   a thread per connection; THREADS is ignored for tpc)
 * Runs until killed. Not part of the product; built by tests/bench/serve/run.sh. */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct MHD_Response *answer;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **state)
{
    (void)cls;
    (void)url;
    (void)method;
    (void)version;
    (void)upload;
    if (!*state) { /* headers: wait for the body */
        *state = (void *)1;
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body: dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    return MHD_queue_response(conn, MHD_HTTP_OK, answer);
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: mhd_static PORT THREADS BODY_FILE [epoll|poll|tpc]\n");
        return 2;
    }
    int port = atoi(argv[1]), threads = atoi(argv[2]);
    FILE *f = fopen(argv[3], "rb");
    if (port <= 0 || port > 65535 || threads < 1 || threads > 64 || !f) {
        fprintf(stderr, "mhd_static: bad port, thread count or body file\n");
        return 2;
    }
    static char body[65536];
    size_t len = fread(body, 1, sizeof body, f);
    int bad = ferror(f) || (len == sizeof body && fgetc(f) != EOF);
    fclose(f);
    if (bad) {
        fprintf(stderr, "mhd_static: cannot read %s, or it is over %zu bytes\n", argv[3], sizeof body);
        return 1;
    }
    answer = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_PERSISTENT);
    if (!answer || MHD_add_response_header(answer, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES) {
        fprintf(stderr, "mhd_static: cannot build the answer\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *mode = argc == 5 ? argv[4] : "epoll";
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TURBO | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    if (strcmp(mode, "epoll") == 0) flags |= MHD_USE_EPOLL;
    else if (strcmp(mode, "poll") == 0) flags |= MHD_USE_POLL;
    else if (strcmp(mode, "tpc") == 0) flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    else {
        fprintf(stderr, "mhd_static: MODE is epoll, poll or tpc\n");
        return 2;
    }
    /* a pool only for more than one thread (libmicrohttpd warns about a pool of 0 or 1,
     * and a thread per connection takes none) */
    struct MHD_OptionItem pool[] = {{MHD_OPTION_THREAD_POOL_SIZE, threads, NULL}, {MHD_OPTION_END, 0, NULL}};
    int use_pool = strcmp(mode, "tpc") != 0 && threads > 1;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, NULL, MHD_OPTION_ARRAY, use_pool ? pool : pool + 1,
        MHD_OPTION_CONNECTION_LIMIT, 512u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)8192, MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "mhd_static: cannot start libmicrohttpd (%s mode, %d threads)\n", mode, threads);
        return 1;
    }
    int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1024) != 0) {
        fprintf(stderr, "mhd_static: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        return 1;
    }
    for (;;) { /* the acceptor: blocking accept, handed to a worker by socket number */
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(ls, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) poll(NULL, 0, 100);
            continue;
        }
        (void)MHD_add_connection(d, fd, (struct sockaddr *)&peer, plen);
    }
}
