/* cmd_db.c: prognos db init|start|stop|status|migrate|url|psql */
#include "engine/cli/cli.h"
#include "registry/registry.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: prognos db <subcommand> [--json]\n"
    "\n"
    "Manage the warehouse database.\n"
    "\n"
    "subcommands:\n"
    "  init      create PROGNOS_HOME, the pseudonymization key (mode 0600), the model\n"
    "            signing key pair (signing.key, signing.pub), the embedded PostgreSQL\n"
    "            cluster and the warehouse schema; safe to run again\n"
    "  start     start the embedded server (Unix socket in $PROGNOS_HOME/pg/run, no TCP);\n"
    "            a sharded warehouse's in-doubt loads are then resolved (db shards recover)\n"
    "  stop      stop the embedded server\n"
    "  status    say whether the server runs and which migrations are applied\n"
    "  migrate   apply pending schema migrations (idempotent)\n"
    "  url       print the warehouse's libpq URI (psql \"$(prognos db url)\" works)\n"
    "  psql      open psql on the warehouse; further arguments go to psql\n"
    "  retention set|apply|show  retention of the fact tables' yearly partitions,\n"
    "            applied by pg_partman (prognos db retention --help)\n"
    "\n"
    "With PROGNOS_DB set, prognos uses that server and never starts or stops one.\n"
    "Commands that need the database initialise and start the embedded one themselves.\n";

static int do_status(const px_config *cfg, int json)
{
    px_err e = {0};
    char info[4600], url[13000], mig[64] = "";
    int up = px_pg_status(cfg, info, sizeof info, &e);
    if (up < 0) return px_cli_fail(&e);
    if (up == 1 && px_pg_url(cfg, url, sizeof url, &e) == 0) {
        PGconn *c = px_db_connect_url(url, &e);
        if (c) {
            if (px_db_scalar(c, &e, mig, sizeof mig,
                             "SELECT coalesce(max(version), 0) FROM public.prognos_migrations") != 0)
                snprintf(mig, sizeof mig, "0");
            PQfinish(c);
        }
    }
    if (json) {
        cJSON *o = cJSON_CreateObject();
        int ok = o != NULL;
        cli_json_ok(&ok, cJSON_AddBoolToObject(o, "running", up != 0));
        cli_json_ok(&ok, cJSON_AddBoolToObject(o, "external", cfg->external != 0));
        cli_json_ok(&ok, cJSON_AddStringToObject(o, "home", cfg->home));
        cli_json_ok(&ok, cJSON_AddRawToObject(o, "schema_version", mig[0] ? mig : "null"));
        if (cli_json_print(o, ok) != 0) return PX_EXIT_FAIL;
    } else
        printf("%s%s%s\n", info, mig[0] ? "; schema version " : "", mig);
    return up ? PX_EXIT_OK : PX_EXIT_FAIL;
}

static int do_psql(const px_config *cfg, int argc, char **argv)
{
    px_err e = {0};
    char url[13000], psql[4400];
    PGconn *c = px_db_connect(cfg, &e); /* starts and migrates if needed */
    if (!c) return px_cli_fail(&e);
    PQfinish(c);
    if (px_pg_url(cfg, url, sizeof url, &e) != 0) return px_cli_fail(&e);
    snprintf(psql, sizeof psql, "%s/psql", cfg->pg_bin);
    char *args[64];
    int n = 0;
    args[n++] = "psql";
    args[n++] = url;
    for (int i = 0; i < argc && n < 63; i++) args[n++] = argv[i];
    args[n] = NULL;
    if (cfg->pg_bin[0] && access(psql, X_OK) == 0) execv(psql, args);
    execvp("psql", args);
    fprintf(stderr, "prognos: error: cannot run psql\nhint: install postgresql-client-15\n");
    return PX_EXIT_FAIL;
}

int cmd_db(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? PX_EXIT_USAGE : PX_EXIT_OK;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "retention") == 0) return cmd_db_retention(argc - 1, argv + 1);
    if (strcmp(sub, "shards") == 0) return cmd_db_shards(argc - 1, argv + 1);
    if (strcmp(sub, "psql") != 0 && px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    int json = 0;
    if (strcmp(sub, "psql") != 0) {
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0) json = 1;
            else return px_cli_usage_error("db", "unknown option '%s'", argv[i]);
        }
    }
    px_config cfg;
    px_err e = {0};
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);

    if (strcmp(sub, "init") == 0) {
        if (px_pg_init(&cfg, &e) != 0) return px_cli_fail(&e);
        if (px_reg_keygen(&cfg, &e) != 0) return px_cli_fail(&e); /* model signing key pair */
        PGconn *c = px_db_connect(&cfg, &e);
        if (!c) return px_cli_fail(&e);
        PQfinish(c);
        char url[13000];
        px_pg_url(&cfg, url, sizeof url, &e);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            int ok = o != NULL;
            cli_json_ok(&ok, cJSON_AddStringToObject(o, "home", cfg.home));
            cli_json_ok(&ok, cJSON_AddStringToObject(o, "url", url));
            if (cli_json_print(o, ok) != 0) return PX_EXIT_FAIL;
        } else
            printf("warehouse ready in %s\n%s\n", cfg.home, url);
        return PX_EXIT_OK;
    }
    if (strcmp(sub, "start") == 0) {
        if (px_pg_start(&cfg, &e) != 0) return px_cli_fail(&e);
        printf("embedded server running\n");
        /* a sharded warehouse: prepared transactions a killed load left on the
         * shards are resolved (a shard that is down is only reported) */
        char url[13000];
        PGconn *c = px_pg_url(&cfg, url, sizeof url, &e) == 0 ? px_db_connect_url(url, &e) : NULL;
        px_shards_recovery rec = {0};
        if (c && px_shards_recover(c, -1, &rec, &e) != 0)
            fprintf(stderr, "warning: in-doubt loads on the shards not resolved: %s%s%s (prognos db shards recover)\n",
                    e.msg, e.detail[0] ? ": " : "", e.detail);
        else if (rec.committed + rec.rolled_back > 0)
            printf("shards: %d in-doubt prepared transactions of an interrupted load committed, %d rolled back\n",
                   rec.committed, rec.rolled_back);
        if (c) PQfinish(c);
        return PX_EXIT_OK;
    }
    if (strcmp(sub, "stop") == 0) {
        if (px_pg_stop(&cfg, &e) != 0) return px_cli_fail(&e);
        printf("embedded server stopped\n");
        return PX_EXIT_OK;
    }
    if (strcmp(sub, "status") == 0) return do_status(&cfg, json);
    if (strcmp(sub, "migrate") == 0) {
        char url[13000];
        if (!cfg.external) {
            int rc = px_pg_initialized(&cfg) ? px_pg_start(&cfg, &e) : px_pg_init(&cfg, &e);
            if (rc != 0) return px_cli_fail(&e);
        }
        if (px_pg_url(&cfg, url, sizeof url, &e) != 0) return px_cli_fail(&e);
        PGconn *c = px_db_connect_url(url, &e);
        if (!c) return px_cli_fail(&e);
        int applied = 0;
        int rc = px_db_migrate(c, &applied, &e);
        PQfinish(c);
        if (rc != 0) return px_cli_fail(&e);
        if (json) printf("{\"applied\":%d}\n", applied);
        else printf("%d migration%s applied\n", applied, applied == 1 ? "" : "s");
        return PX_EXIT_OK;
    }
    if (strcmp(sub, "url") == 0) {
        char url[13000];
        if (px_pg_url(&cfg, url, sizeof url, &e) != 0) return px_cli_fail(&e);
        printf("%s\n", url);
        return PX_EXIT_OK;
    }
    if (strcmp(sub, "psql") == 0) return do_psql(&cfg, argc - 2, argv + 2);
    return px_cli_usage_error("db", "unknown subcommand '%s'", sub);
}
