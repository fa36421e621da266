/* poll.c: the poller thread. Every poll_ms (or when woken by SIGHUP, an admin
 * reload, or a closed drift window) it: tests closed drift windows and stores
 * their alerts; re-reads the active API keys; re-reads the champion aliases and
 * loads any version that changed (verified by the registry, swapped atomically:
 * requests in flight keep the version they started with); refreshes the cached
 * model list and recent alerts. A failed load keeps the old version serving.
 * The database being down stops none of the serving: only these refreshes wait. */
#include "serve/internal.h"
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static srv_drift *find_drift(px_server *s, const char *name, int version)
{
    for (size_t i = 0; i < s->ndrifts; i++)
        if (s->drifts[i]->version == version && strcmp(s->drifts[i]->name, name) == 0) return s->drifts[i];
    return NULL;
}

/* The list owns monitors. A reload of the same version keeps its monitor (and
 * its open window); the new one is dropped. Returns the monitor to use. */
static srv_drift *adopt_drift(px_server *s, srv_drift *d)
{
    pthread_mutex_lock(&s->drift_mu);
    srv_drift *have = find_drift(s, d->name, d->version);
    if (!have && s->ndrifts < SRV_MAX_DRIFT) {
        s->drifts[s->ndrifts++] = d;
        have = d;
        d = NULL;
    }
    pthread_mutex_unlock(&s->drift_mu);
    if (d && !have) px_log(PX_LOG_WARN, "serve: too many model versions monitored; '%s' v%d is not", d->name, d->version);
    srv_drift_free(d);
    return have;
}

void srv_drift_register(px_server *s, srv_drift *d)
{
    (void)adopt_drift(s, d);
}

static int wanted(const px_server *s, const char *name)
{
    if (!s->only) return 1;
    for (char **o = s->only; *o; o++)
        if (strcmp(*o, name) == 0) return 1;
    return 0;
}

static int slot_of(px_server *s, const char *name, int create)
{
    int n = atomic_load(&s->nmodels);
    for (int i = 0; i < n; i++)
        if (strcmp(s->names[i], name) == 0) return i;
    if (!create || n >= SRV_MAX_MODELS) return -1;
    snprintf(s->names[n], sizeof s->names[n], "%s", name);
    atomic_store(&s->nmodels, n + 1); /* the name is written before it is published */
    return n;
}

static int refresh_text(PGconn *c, srv_slot *slot, const char *sql, px_err *e)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = px_err_set(e, PX_EDB, "cannot refresh the server's cached lists");
        px_err_detail(e, "%s", PQerrorMessage(c));
    } else {
        srv_text *t = srv_text_new(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
        if (t) srv_slot_swap(slot, t);
    }
    PQclear(r);
    return rc;
}

static const char alerts_sql[] =
    "SELECT json_build_object('alerts', coalesce(json_agg(a ORDER BY a.open DESC, a.last_at DESC, a.alert_id DESC),"
    " '[]'))::text FROM (SELECT alert_id, model, version, feature, test, statistic, threshold, p_value, psi,"
    " window_n, reference_n, source, first_at, last_at, windows, resolved_at, resolved_at IS NULL AS open"
    " FROM serve.drift_alerts ORDER BY resolved_at IS NULL DESC, last_at DESC, alert_id DESC LIMIT 500) a";

/* Installs a fetched key set unless a newer fetch (the other thread's) is
 * installed already: an older set must not bring back a key revoked since. */
static void keys_install(px_server *s, srv_keyset *ks)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&mu);
    srv_keyset *cur = srv_acquire(&s->keys);
    int newer = !cur || ks->gen > cur->gen;
    srv_release(cur);
    if (newer) srv_slot_swap(&s->keys, ks);
    pthread_mutex_unlock(&mu);
    if (!newer) srv_release(ks);
}

int srv_poll_once(px_server *s, PGconn *c, int force, px_err *e)
{
    int rc = 0;
    srv_keyset *ks = srv_keys_fetch(c, e);
    if (!ks) return e->code ? e->code : PX_EDB;
    keys_install(s, ks);

    /* only a champion that may serve: one that failed its quality gates is not
     * served unless it was accepted at training (px_reg_champions) */
    px_reg_version_brief *ch = NULL;
    size_t nch = 0;
    if ((rc = px_reg_champions(c, NULL, 1, "cannot read the champion aliases", &ch, &nch, e)) != 0) return rc;
    int all_loaded = 1;
    for (size_t i = 0; i < nch; i++) {
        const char *name = ch[i].name;
        int version = ch[i].version;
        if (!wanted(s, name)) continue;
        int slot = slot_of(s, name, 1);
        if (slot < 0) {
            px_log(PX_LOG_WARN, "serve: more than %d models; '%s' is not served", SRV_MAX_MODELS, name);
            continue;
        }
        srv_model *cur = srv_acquire(&s->models[slot]);
        int have = cur ? cur->version : 0;
        srv_release(cur);
        if (have == version && !force) continue;
        /* a version that failed to load is retried every 30 s (or on a forced reload),
         * not at every poll */
        if (!force && s->failed_version[slot] == version && srv_mono_us() - s->failed_at_us[slot] < 30000000u) {
            if (!have) all_loaded = 0;
            continue;
        }
        px_err le = {0};
        srv_model *sm = srv_model_load(c, &s->cfg, name, version, ch[i].algo, ch[i].task, ch[i].feature_table, &le);
        if (!sm) {
            atomic_fetch_add(&s->metrics.reload_failures, 1);
            s->failed_version[slot] = version;
            s->failed_at_us[slot] = srv_mono_us();
            if (have) px_log(PX_LOG_ERROR, "serve: %s; model '%s' still serves v%d", le.msg, name, have);
            else {
                px_log(PX_LOG_ERROR, "serve: %s; model '%s' is not served", le.msg, name);
                all_loaded = 0;
            }
            continue;
        }
        s->failed_version[slot] = 0;
        if (sm->drift) sm->drift = adopt_drift(s, sm->drift);
        srv_slot_swap(&s->models[slot], sm);
        if (atomic_load(&s->ready)) atomic_fetch_add(&s->metrics.reloads, 1);
        px_log(PX_LOG_INFO, "serve: model '%s' now serves v%d (was %s%d)", name, version, have ? "v" : "none ", have);
    }
    px_reg_briefs_free(ch, nch);
    if (s->only)
        for (char **o = s->only; *o; o++) {
            int slot = slot_of(s, *o, 0);
            srv_model *cur = slot >= 0 ? srv_acquire(&s->models[slot]) : NULL;
            if (!cur) all_loaded = 0;
            srv_release(cur);
        }
    if (all_loaded && atomic_load(&s->nmodels) > 0) atomic_store(&s->ready, 1);
    char *models = NULL;
    if ((rc = px_reg_models_json(c, &models, e)) != 0) return rc;
    srv_text *mt = models ? srv_text_new(models, strlen(models)) : NULL;
    free(models);
    if (mt) srv_slot_swap(&s->models_json, mt);
    return refresh_text(c, &s->alerts_json, alerts_sql, e);
}

/* Tests every closed window, oldest first; alerts go to the database in the same pass. */
static int drift_pass(px_server *s, PGconn *c, px_err *e)
{
    srv_drift_alert alerts[64];
    pthread_mutex_lock(&s->drift_mu);
    size_t n = s->ndrifts;
    srv_drift *list[SRV_MAX_DRIFT];
    memcpy(list, s->drifts, n * sizeof list[0]);
    pthread_mutex_unlock(&s->drift_mu);
    for (size_t i = 0; i < n; i++) {
        srv_drift_tick(list[i], &s->p);
        int na;
        while ((na = srv_drift_evaluate(list[i], &s->dp, alerts, 64)) >= 0) {
            atomic_fetch_add(&s->metrics.drift_windows, 1);
            atomic_fetch_add(&s->metrics.drift_alerts, (unsigned long long)na);
            /* the log says when an alert opens; a variable that keeps failing is in
             * serve.drift_alerts (last_at, windows), not in a line per window */
            if (!list[i]->stored_once || na != list[i]->open_alerts)
                for (int k = 0; k < na; k++)
                    px_log(PX_LOG_WARN,
                           "serve: drift alert: model '%s' v%d feature '%s' %s = %.4g (threshold %.4g, n %zu)",
                           alerts[k].model, alerts[k].version, alerts[k].feature, alerts[k].test, alerts[k].statistic,
                           alerts[k].threshold, alerts[k].n);
            /* a clean window after a clean window has nothing to store or resolve; the
             * first window of a monitor also resolves what an earlier process left open */
            if (na != 0 || !list[i]->stored_once || list[i]->open_alerts) {
                int rc = srv_alerts_store(c, list[i]->name, list[i]->version, alerts, na, "serve", e);
                if (rc != 0) return rc;
                list[i]->stored_once = 1;
                list[i]->open_alerts = na;
            }
            srv_drift_recorded(list[i]);
        }
    }
    return 0;
}

/* The key refresher: re-reads the active API keys every poll interval on a
 * connection of its own, so that a revoked key stops working within an interval
 * however long the poller spends loading a model or storing drift alerts. */
static void *keys_main(void *arg)
{
    px_server *s = arg;
    PGconn *c = NULL;
    uint64_t last_us = srv_mono_us();
    while (!atomic_load(&s->stopping)) {
        /* short naps, so that a stop is noticed within 100 ms */
        uint64_t since = srv_mono_us() - last_us, wait_us = (uint64_t)s->p.poll_ms * 1000u;
        if (since < wait_us) {
            uint64_t nap = wait_us - since;
            poll(NULL, 0, nap > 100000u ? 100 : (int)(nap / 1000u) + 1);
            continue;
        }
        last_us = srv_mono_us();
        px_err e = {0};
        if (!c && !(c = srv_db_open(&s->cfg, "prognos keys", 10000, &e))) continue;
        srv_keyset *ks = srv_keys_fetch(c, &e);
        if (!ks) {
            PQfinish(c);
            c = NULL;
            continue;
        }
        keys_install(s, ks);
    }
    if (c) PQfinish(c);
    return NULL;
}

void *srv_poller_main(void *arg)
{
    px_server *s = arg;
    PGconn *c = NULL;
    int was_ok = 1;
    pthread_t keys;
    int keys_started = pthread_create(&keys, NULL, keys_main, s) == 0;
    if (!keys_started) px_log(PX_LOG_WARN, "serve: cannot start the key refresher; keys are re-read by the poller only");
    uint64_t last_poll_us = srv_mono_us();
    while (!atomic_load(&s->stopping)) {
        struct pollfd pf = {.fd = s->poll_pipe[0], .events = POLLIN};
        uint64_t since = srv_mono_us() - last_poll_us, wait_us = (uint64_t)s->p.poll_ms * 1000u;
        if (poll(&pf, 1, since >= wait_us ? 0 : (int)((wait_us - since) / 1000u) + 1) > 0) {
            char buf[64];
            while (read(s->poll_pipe[0], buf, sizeof buf) > 0) {}
        }
        if (atomic_load(&s->stopping)) break;
        px_err e = {0};
        if (!c) c = srv_db_open(&s->cfg, "prognos poller", 10000, &e);
        int ok = c != NULL;
        /* closed windows wait (queued, then merged) while the database is away: their alerts must be stored */
        if (ok && drift_pass(s, c, &e) != 0) ok = 0;
        /* woken for a closed drift window: the rest waits for its interval */
        int force = atomic_exchange(&s->reload_all, 0);
        uint64_t now = srv_mono_us();
        if (!ok || force || now - last_poll_us >= (uint64_t)s->p.poll_ms * 1000u) {
            last_poll_us = now; /* an attempt, failed or not: the next waits its interval */
            if (ok && srv_poll_once(s, c, force, &e) != 0) ok = 0;
            if (ok) atomic_fetch_add(&s->metrics.polls, 1);
        }
        if (!ok) {
            if (c) PQfinish(c);
            c = NULL;
            if (was_ok) px_log(PX_LOG_WARN, "serve: poller: %s (%s); serving what is loaded", e.msg, e.detail);
        } else if (!was_ok)
            px_log(PX_LOG_INFO, "serve: poller: database reachable again");
        atomic_store(&s->db_ok, ok);
        was_ok = ok;
    }
    if (c) PQfinish(c);
    if (keys_started) pthread_join(keys, NULL);
    return NULL;
}
