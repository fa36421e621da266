/* config.c: resolves the configuration from the environment (see px_config in
 * engine.h). PROGNOS_HOME is made absolute so that a server started from one
 * directory is found from another. */
#include "engine/engine.h"
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_env(char *dst, size_t len, const char *name, const char *dflt)
{
    const char *v = getenv(name);
    if (!v || !*v) v = dflt;
    if (strlen(v) >= len) return -1;
    strcpy(dst, v);
    return 0;
}

/* Finds the PostgreSQL server binaries: PROGNOS_PG_BIN, else Debian's layout. */
static void find_pg_bin(char *dst, size_t len)
{
    static const char *candidates[] = {"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
                                       "/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/14/bin",
                                       "/usr/local/pgsql/bin", NULL};
    const char *v = getenv("PROGNOS_PG_BIN");
    if (v && *v) {
        snprintf(dst, len, "%s", v);
        return;
    }
    for (int i = 0; candidates[i]; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/initdb", candidates[i]);
        if (access(p, X_OK) == 0) {
            snprintf(dst, len, "%s", candidates[i]);
            return;
        }
    }
    dst[0] = '\0';
}

int px_config_load(px_config *cfg, px_err *e)
{
    char raw[4096];
    memset(cfg, 0, sizeof *cfg);
    if (copy_env(raw, sizeof raw, "PROGNOS_HOME", "./var") != 0)
        return px_err_set(e, PX_EINVAL, "PROGNOS_HOME is too long");
    if (raw[0] == '/') {
        snprintf(cfg->home, sizeof cfg->home, "%s", raw);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) return px_err_set(e, PX_EIO, "cannot get the current directory");
        const char *rel = raw;
        while (rel[0] == '.' && rel[1] == '/') rel += 2;
        if (strcmp(rel, ".") == 0) rel = "";
        if ((size_t)snprintf(cfg->home, sizeof cfg->home, "%s%s%s", cwd, *rel ? "/" : "", rel) >= sizeof cfg->home)
            return px_err_set(e, PX_EINVAL, "PROGNOS_HOME is too long");
    }
    size_t n = strlen(cfg->home);
    while (n > 1 && cfg->home[n - 1] == '/') cfg->home[--n] = '\0';

    if (copy_env(cfg->db_url, sizeof cfg->db_url, "PROGNOS_DB", "") != 0)
        return px_err_set(e, PX_EINVAL, "PROGNOS_DB is too long");
    cfg->external = cfg->db_url[0] != '\0';

    char dflt_key[4200];
    snprintf(dflt_key, sizeof dflt_key, "%s/secret.key", cfg->home);
    if (copy_env(cfg->key_file, sizeof cfg->key_file, "PROGNOS_KEY_FILE", dflt_key) != 0)
        return px_err_set(e, PX_EINVAL, "PROGNOS_KEY_FILE is too long");
    if (copy_env(cfg->pg_user, sizeof cfg->pg_user, "PROGNOS_PG_USER", "postgres") != 0)
        return px_err_set(e, PX_EINVAL, "PROGNOS_PG_USER is too long");
    find_pg_bin(cfg->pg_bin, sizeof cfg->pg_bin);
    return 0;
}
