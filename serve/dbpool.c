/* dbpool.c: the database connections of the request path (encounter lookups,
 * /v1/kpi, CDS warehouse reads, CDS feedback): a small pool of connections
 * with a short connect timeout and a statement timeout, so that no request
 * waits long for the warehouse. */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

PGconn *srv_db_open(const px_config *cfg, const char *app, int statement_timeout_ms, px_err *e)
{
    char url[4200], full[4400];
    if (px_pg_url(cfg, url, sizeof url, e) != 0) return NULL;
    /* a short connect timeout: someone waits for it; never px_db_connect, which
     * would start an embedded server that an operator stopped */
    if (strncmp(url, "postgres", 8) == 0)
        snprintf(full, sizeof full, "%s%sconnect_timeout=2", url, strchr(url, '?') ? "&" : "?");
    else
        snprintf(full, sizeof full, "%s connect_timeout=2", url);
    PGconn *c = PQconnectdb(full);
    if (PQstatus(c) != CONNECTION_OK) {
        px_err_set(e, PX_EDB, "cannot connect to the warehouse");
        px_err_detail(e, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    char set[160];
    snprintf(set, sizeof set, "SET statement_timeout = %d; SET application_name = '%s'", statement_timeout_ms, app);
    PGresult *r = PQexec(c, set);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        px_err_set(e, PX_EDB, "cannot set up a warehouse connection");
        px_err_detail(e, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

PGconn *srv_pool_get(px_server *s, px_err *e)
{
    PGconn *c = NULL;
    pthread_mutex_lock(&s->pool_mu);
    if (s->pool_n > 0) c = s->pool[--s->pool_n];
    pthread_mutex_unlock(&s->pool_mu);
    if (c && PQstatus(c) == CONNECTION_OK) return c;
    if (c) PQfinish(c);
    /* bound every statement a request waits for */
    return srv_db_open(&s->cfg, "prognos serve", 2000, e);
}

void srv_pool_put(px_server *s, PGconn *c, int broken)
{
    if (!c) return;
    if (broken || PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return;
    }
    pthread_mutex_lock(&s->pool_mu);
    if (s->pool_n < (int)(sizeof s->pool / sizeof s->pool[0])) {
        s->pool[s->pool_n++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (c) PQfinish(c);
}
