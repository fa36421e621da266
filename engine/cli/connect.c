/* connect.c: how a command reaches the warehouse: configuration, log, connection,
 * in that order, one way for every command (a read-only command never creates a
 * warehouse). */
#include "engine/cli/cli.h"

PGconn *px_cli_connect(px_config *cfg, int reads_only, px_err *e)
{
    if (px_config_load(cfg, e) != 0) return NULL;
    if (reads_only && px_db_require(cfg, e) != 0) return NULL;
    px_log_open(cfg->home);
    return px_db_connect(cfg, e);
}
