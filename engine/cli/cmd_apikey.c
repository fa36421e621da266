/* cmd_apikey.c: prognos apikey - create, revoke and list the server's API keys. */
#include "engine/cli/cli.h"
#include "serve/serve.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: prognos apikey create --role predict|read|admin [--name TEXT] [--json]\n"
    "       prognos apikey revoke ID\n"
    "       prognos apikey list [--json]\n"
    "\n"
    "API keys of the prediction server. 'create' prints the key once: only its SHA-256 is\n"
    "stored, so it cannot be shown again. Roles: predict (POST .../predict), read (models,\n"
    "KPIs, drift, alerts, metrics), admin (everything). A running server picks up new and\n"
    "revoked keys within its poll interval. Clients send 'Authorization: Bearer <key>'.\n"
    "\n"
    "Exit codes: 0 ok, 1 failed (revoke: no such active key), 2 usage.\n";

int cmd_apikey(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv) || argc < 2) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? PX_EXIT_USAGE : PX_EXIT_OK;
    }
    const char *sub = argv[1], *role_s = NULL, *name = "", *id = NULL;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--role") == 0 && i + 1 < argc) role_s = argv[++i];
        else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc) name = argv[++i];
        else if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (argv[i][0] != '-' && !id) id = argv[i];
        else return px_cli_usage_error("apikey", "unknown or incomplete option '%s'", argv[i]);
    }
    px_key_role role = PX_KEY_READ;
    if (strcmp(sub, "create") == 0) {
        if (!role_s || px_key_role_parse(role_s, &role) != 0)
            return px_cli_usage_error("apikey", "create needs --role predict, read or admin");
        if (id) return px_cli_usage_error("apikey", "unexpected argument '%s'", id);
    } else if (strcmp(sub, "revoke") == 0) {
        if (!id) return px_cli_usage_error("apikey", "revoke needs the key's id");
    } else if (strcmp(sub, "list") == 0) {
        if (id) return px_cli_usage_error("apikey", "unexpected argument '%s'", id);
    } else
        return px_cli_usage_error("apikey", "unknown subcommand '%s' (create, revoke, list)", sub);

    px_config cfg;
    px_err e = {0};
    PGconn *c = NULL;
    int code = PX_EXIT_OK;
    if (px_config_load(&cfg, &e) != 0) goto fail;
    /* list and revoke need keys that exist: never a new warehouse for them */
    if (strcmp(sub, "create") != 0 && px_db_require(&cfg, &e) != 0) goto fail;
    px_log_open(cfg.home);
    if (!(c = px_db_connect(&cfg, &e))) goto fail;
    if (strcmp(sub, "create") == 0) {
        char key[PX_KEY_LEN + 1], kid[13];
        if (px_key_create(c, name, role, key, sizeof key, kid, &e) != 0) goto fail;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            int ok = o != NULL;
            cli_json_ok(&ok, cJSON_AddStringToObject(o, "id", kid));
            cli_json_ok(&ok, cJSON_AddStringToObject(o, "role", px_key_role_name(role)));
            cli_json_ok(&ok, cJSON_AddStringToObject(o, "key", key));
            if (cli_json_print(o, ok) != 0) {
                code = PX_EXIT_FAIL;
                goto done;
            }
        } else {
            printf("%s\n", key);
            fprintf(stderr, "prognos: created %s key %s; store it now: it is not shown again\n",
                    px_key_role_name(role), kid);
        }
        px_log(PX_LOG_INFO, "apikey: created %s key %s", px_key_role_name(role), kid);
    } else if (strcmp(sub, "revoke") == 0) {
        if (px_key_revoke(c, id, &e) != 0) goto fail;
        printf("revoked %s\n", id);
        px_log(PX_LOG_INFO, "apikey: revoked key %s", id);
    } else if (px_key_list(c, json, stdout, &e) != 0)
        goto fail;
    goto done;
fail:
    code = px_cli_fail(&e);
done:
    if (c) PQfinish(c);
    return code;
}
