/* cmd_serve.c: prognos serve - the prediction and drift-alert server. */
#include "engine/cli/cli.h"
#include "serve/serve.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos serve [--listen HOST:PORT] [--models A,B] [--threads N] [limits...] [--port-file FILE]\n"
    "\n"
    "Serves the champion version of every model over HTTP or HTTPS (see /openapi.json): predictions\n"
    "with per-feature contributions (/v1 and the Open Inference Protocol V2 under /v2), CDS Hooks\n"
    "services (/cds-services), drift monitoring and alerts, KPIs, health and Prometheus metrics.\n"
    "Every request but /healthz, /readyz, /openapi.json, /v2/health/*, /v2, /cds-services (discovery)\n"
    "and the model cards needs an API key ('prognos apikey create'); CDS calls need the client's JWT\n"
    "with --cds-jwks.\n"
    "A promoted champion is picked up within --poll-ms without a restart; SIGHUP reloads now.\n"
    "SIGINT or SIGTERM stop it after the requests in flight, flushing the audit queue.\n"
    "\n"
    "  --listen HOST:PORT       IPv4 address and port (default 127.0.0.1:8080; port 0: any free one)\n"
    "  --models A,B             serve only these models (default: every model with a champion)\n"
    "  --threads N              worker threads (default one per core)\n"
    "  --max-connections N      open connections in all (default 512); when full, the oldest\n"
    "                           connection still waiting for its request head, from the\n"
    "                           address holding most, makes room (else 503)\n"
    "  --max-per-ip N           open connections from one address (default 128); when full,\n"
    "                           that address's oldest waiting connection makes room\n"
    "  --idle-timeout S         close a connection idle this long (default 10 s)\n"
    "  --request-timeout MS     the deadline of a request head (from the connection's start,\n"
    "                           or its previous answer plus the idle timeout: a slow head is\n"
    "                           cut), of a body (408; cut at twice it) and of sending the\n"
    "                           answer (default 5000 ms)\n"
    "  --max-body BYTES         request body limit (default 1048576)\n"
    "  --max-instances N        instances per predict request (default 1000)\n"
    "  --max-depth N            JSON nesting depth (default 8)\n"
    "  --poll-ms MS             re-read champions and keys this often (default 1000)\n"
    "  --audit-queue N          audit records held while the database is away; when full,\n"
    "                           predict answers 503 (default 262144)\n"
    "  --audit-flush MS         longest wait between audit writes (default 200)\n"
    "  --drift-window N         instances per drift window (default 1000)\n"
    "  --drift-window-seconds S a window also closes after S seconds (default 300)\n"
    "  --drift-min-n N          smallest window tested (default 100)\n"
    "  --drift-min-interval MS  a full window closes no sooner than MS after it opened\n"
    "                           (default 1000: heavy traffic makes larger windows)\n"
    "  --drift-alpha A          false-alarm probability per window (default 0.01)\n"
    "  --psi-floor X            smallest PSI that alerts (default 0.1)\n"
    "  --public-metrics         /metrics without a key\n"
    "  --no-fast-parse          read every predict body with cJSON (default: a one-pass\n"
    "                           reader for the common body, cJSON for the rest)\n"
    "  --port-file FILE         write the bound port there once listening\n"
    "  --tls-cert FILE          serve HTTPS with this PEM certificate (chain); with --tls-key\n"
    "  --tls-key FILE           the PEM private key of --tls-cert\n"
    "  --cors-origins LIST      comma-separated origins a browser may call from, such as\n"
    "                           https://ehr.example.org (* for any); default none\n"
    "  --public-url URL         the server's base URL as clients reach it (the CDS Hooks JWT\n"
    "                           audience is URL/cds-services/ID; card links); default\n"
    "                           http(s)://HOST:PORT of --listen\n"
    "  --cds-jwks FILE          the CDS clients' public keys (a JWKS: EC P-384 or RSA, by kid);\n"
    "                           CDS calls then need the client's signed JWT (ES384/RS384);\n"
    "                           without it they need a predict API key\n"
    "  --cds-issuers LIST       comma-separated JWT issuers accepted (default: any issuer\n"
    "                           whose key is in --cds-jwks)\n"
    "\n"
    "Exit codes: 0 stopped by a signal, 1 failed to start, 2 usage.\n";

static px_server *g_server;

static void on_stop(int sig)
{
    (void)sig;
    px_serve_stop(g_server);
}

static void on_hup(int sig)
{
    (void)sig;
    px_serve_reload(g_server);
}

static int num(const char *s, double lo, double hi, double *out)
{
    double v;
    if (px_cli_double(s, &v) != 0 || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    px_serve_params p = px_serve_default_params();
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        double v = 0;
        int has = i + 1 < argc;
#define NUMOPT(name, lo, hi, field, type)                                                                \
    else if (strcmp(o, name) == 0) {                                                                     \
        if (!has || num(argv[++i], lo, hi, &v) != 0)                                                     \
            return px_cli_usage_error("serve", "%s needs a number from %g to %g", name, (double)(lo), (double)(hi)); \
        p.field = (type)v;                                                                               \
    }
        if (strcmp(o, "--listen") == 0 && has) p.listen = argv[++i];
        else if (strcmp(o, "--models") == 0 && has) p.models = argv[++i];
        else if (strcmp(o, "--port-file") == 0 && has) p.port_file = argv[++i];
        else if (strcmp(o, "--public-metrics") == 0) p.public_metrics = 1;
        else if (strcmp(o, "--no-fast-parse") == 0) p.fast_parse = 0;
        else if (strcmp(o, "--tls-cert") == 0 && has) p.tls_cert = argv[++i];
        else if (strcmp(o, "--tls-key") == 0 && has) p.tls_key = argv[++i];
        else if (strcmp(o, "--cors-origins") == 0 && has) p.cors_origins = argv[++i];
        else if (strcmp(o, "--public-url") == 0 && has) p.public_url = argv[++i];
        else if (strcmp(o, "--cds-jwks") == 0 && has) p.cds_jwks = argv[++i];
        else if (strcmp(o, "--cds-issuers") == 0 && has) p.cds_issuers = argv[++i];
        NUMOPT("--threads", 1, 64, threads, unsigned)
        NUMOPT("--max-connections", 1, 100000, max_connections, unsigned)
        NUMOPT("--max-per-ip", 1, 100000, max_per_ip, unsigned)
        NUMOPT("--idle-timeout", 1, 3600, idle_timeout_s, unsigned)
        NUMOPT("--request-timeout", 10, 3600000, request_timeout_ms, unsigned)
        NUMOPT("--max-body", 64, 1 << 30, max_body_bytes, size_t)
        NUMOPT("--max-instances", 1, 100000, max_instances, size_t)
        NUMOPT("--max-depth", 3, 64, max_depth, int)
        NUMOPT("--poll-ms", 50, 3600000, poll_ms, unsigned)
        NUMOPT("--audit-queue", 1, 1e8, audit_queue, size_t)
        NUMOPT("--audit-flush", 1, 60000, audit_flush_ms, unsigned)
        NUMOPT("--drift-window", 10, 1e9, drift_window, size_t)
        NUMOPT("--drift-window-seconds", 1, 1e7, drift_window_s, unsigned)
        NUMOPT("--drift-min-n", 10, 1e9, drift_min_n, size_t)
        NUMOPT("--drift-min-interval", 0, 3600000, drift_min_interval_ms, unsigned)
        NUMOPT("--drift-alpha", 1e-12, 0.5, drift_alpha, double)
        NUMOPT("--psi-floor", 0, 10, psi_floor, double)
        else return px_cli_usage_error("serve", "unknown or incomplete option '%s'", o);
#undef NUMOPT
    }
    px_config cfg;
    px_err e = {0};
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);
    if (!(g_server = px_serve_start(&cfg, &p, &e))) return px_cli_fail(&e);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    fprintf(stderr, "prognos: serving on %s://%.*s:%u (log: %s/log/prognos.log)\n", p.tls_cert ? "https" : "http",
            (int)(strrchr(p.listen, ':') - p.listen), p.listen, px_serve_port(g_server), cfg.home);
    px_serve_wait(g_server);
    fprintf(stderr, "prognos: stopping\n");
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_IGN);
    px_serve_free(g_server);
    g_server = NULL;
    px_log_close();
    return PX_EXIT_OK;
}
