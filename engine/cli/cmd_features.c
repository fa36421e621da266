/* cmd_features.c: prognos features build | list */
#include "engine/cli/cli.h"
#include "features/features.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos features build [--set readmission|mortality|los|all|marts] [--json]\n"
    "       prognos features list [--json]\n"
    "\n"
    "build    (re)build feature tables in the warehouse, each in one transaction:\n"
    "         features.readmission, features.mortality, features.los, one row per index\n"
    "         stay, point-in-time correct (see features/README.md). A set already\n"
    "         built from the same ETL batches with the same definition is left as it is\n"
    "         (reported as unchanged). Each build is recorded in features.catalog.\n"
    "           --set NAME   one set, or all (default: the three sets)\n"
    "           --set marts  the analysts' marts instead: tables in the mart schema\n"
    "                        (cost_patient_year, cost_facility, cost_drg, readmission,\n"
    "                        readmission_facility, provider_utilization), rebuilt\n"
    "                        in one transaction; columns in features/README.md\n"
    "           --json       one JSON object per set, in an array\n"
    "list     the latest build of each set: rows, positives, definition hash, batches\n"
    "\n"
    "Exit codes: 0 ok (built or unchanged), 1 failed, 2 usage error.\n";

/* features build --set marts: one line per mart table, or one JSON object */
static int do_build_marts(int json)
{
    px_config cfg;
    px_err e = {0};
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);
    PGconn *c = px_db_connect(&cfg, &e);
    if (!c) return px_cli_fail(&e);
    px_feat_marts_result r;
    int rc = px_feat_marts_build(c, &r, &e);
    PQfinish(c);
    if (rc != 0) return px_cli_fail(&e);
    if (json) {
        printf("{\"set\":\"marts\",\"seconds\":%.3f,\"tables\":{", r.seconds);
        for (int i = 0; i < px_feat_marts_count; i++)
            printf("%s\"%s\":%lld", i ? "," : "", px_feat_marts[i], r.rows[i]);
        printf("}}\n");
    } else {
        printf("marts built in %.1f s:\n", r.seconds);
        for (int i = 0; i < px_feat_marts_count; i++) printf("  %-28s %lld rows\n", px_feat_marts[i], r.rows[i]);
    }
    return PX_EXIT_OK;
}

static int do_build(int argc, char **argv)
{
    const char *set = "all";
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) set = argv[++i];
        else if (strcmp(argv[i], "--json") == 0) json = 1;
        else return px_cli_usage_error("features", "unknown or incomplete option '%s'", argv[i]);
    }
    if (strcmp(set, "all") != 0 && strcmp(set, "marts") != 0 && !px_feat_set_find(set))
        return px_cli_usage_error("features", "unknown feature set '%s' (readmission, mortality, los, all or marts)",
                                  set);
    if (strcmp(set, "marts") == 0) return do_build_marts(json);

    px_config cfg;
    px_err e = {0};
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);
    PGconn *c = px_db_connect(&cfg, &e);
    if (!c) return px_cli_fail(&e);
    int rc = PX_EXIT_OK;
    if (json) printf("[");
    for (int k = 0, first = 1; k < px_feat_sets_count; k++) {
        const px_feat_set_info *s = &px_feat_sets[k];
        if (strcmp(set, "all") != 0 && strcmp(set, s->name) != 0) continue;
        px_feat_build_result r;
        if (px_feat_build(c, s->name, &r, &e) != 0) {
            if (json) printf("]\n");
            fflush(stdout);
            rc = px_cli_fail(&e);
            break;
        }
        if (json)
            printf("%s{\"set\":\"%s\",\"table\":\"%s\",\"build_id\":%lld,\"rows\":%lld,\"positives\":%lld,"
                   "\"definition_hash\":\"%s\",\"seconds\":%.3f,\"unchanged\":%s}",
                   first ? "" : ",", s->name, s->table, r.build_id, r.rows, r.positives, r.def_hash, r.seconds,
                   r.unchanged ? "true" : "false");
        else if (r.unchanged)
            printf("%s: unchanged (build %lld: %lld rows", s->table, r.build_id, r.rows);
        else
            printf("%s: built in %.1f s (build %lld): %lld rows", s->table, r.seconds, r.build_id, r.rows);
        if (!json && s->binary) printf(", %lld with %s = 1", r.positives, s->label);
        if (!json) printf("%s\n", r.unchanged ? ")" : "");
        first = 0;
    }
    if (json && rc == PX_EXIT_OK) printf("]\n");
    PQfinish(c);
    return rc;
}

static const char list_sql[] =
    "SELECT coalesce(json_agg(json_build_object('set', set_name, 'table', table_name, 'build_id', build_id,"
    " 'rows', row_count, 'positives', positives, 'definition_hash', definition_hash,"
    " 'source_batches', source_batches, 'built_at', to_char(built_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " 'seconds', seconds, 'table_exists', to_regclass(table_name) IS NOT NULL) ORDER BY set_name), '[]')"
    " FROM (SELECT DISTINCT ON (set_name) * FROM features.catalog ORDER BY set_name, build_id DESC) l";

static const char list_text_sql[] =
    "SELECT set_name, table_name, build_id, row_count, positives, left(definition_hash, 12),"
    " array_to_string(source_batches, ','), to_char(built_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), seconds,"
    " to_regclass(table_name) IS NOT NULL"
    " FROM (SELECT DISTINCT ON (set_name) * FROM features.catalog ORDER BY set_name, build_id DESC) l"
    " ORDER BY set_name";

static int do_list(int argc, char **argv)
{
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else return px_cli_usage_error("features", "unknown option '%s'", argv[i]);
    }
    px_config cfg;
    px_err e = {0};
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    if (px_db_require(&cfg, &e) != 0) return px_cli_fail(&e); /* reads only: never creates a warehouse */
    px_log_open(cfg.home);
    PGconn *c = px_db_connect(&cfg, &e);
    if (!c) return px_cli_fail(&e);
    PGresult *r = PQexec(c, json ? list_sql : list_text_sql);
    int rc = PX_EXIT_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        px_err_set(&e, PX_EDB, "cannot read features.catalog");
        px_err_detail(&e, "%s", PQresultErrorMessage(r));
        rc = px_cli_fail(&e);
    } else if (json) {
        printf("%s\n", PQgetvalue(r, 0, 0));
    } else if (PQntuples(r) == 0) {
        printf("no feature tables built yet; run 'prognos features build'\n");
    } else {
        printf("%-12s %-22s %6s %9s %9s %-12s %-10s %-16s %8s\n", "set", "table", "build", "rows", "positives", "hash",
               "batches", "built (UTC)", "seconds");
        for (int i = 0; i < PQntuples(r); i++)
            printf("%-12s %-22s %6s %9s %9s %-12s %-10s %-16s %8.1f%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                   PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
                   PQgetvalue(r, i, 6), PQgetvalue(r, i, 7), atof(PQgetvalue(r, i, 8)),
                   strcmp(PQgetvalue(r, i, 9), "t") == 0 ? "" : "  (table dropped)");
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

int cmd_features(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return PX_EXIT_USAGE;
    }
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    if (strcmp(argv[1], "build") == 0) return do_build(argc, argv);
    if (strcmp(argv[1], "list") == 0) return do_list(argc, argv);
    return px_cli_usage_error("features", "unknown subcommand '%s'", argv[1]);
}
