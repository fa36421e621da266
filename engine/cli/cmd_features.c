/* cmd_features.c: prognos features build | list | fhir (cmd_features_fhir.c) */
#include "engine/cli/cli.h"
#include "features/features.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos features build [--set readmission|mortality|los|all|marts] [--json]\n"
    "       prognos features list [--json]\n"
    "       prognos features fhir --set readmission|mortality|los --prefetch FILE\n"
    "                             [--as-of DATE] [--ndjson]\n"
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
    "fhir     the feature instance of one stay computed from FHIR R4 resources, by\n"
    "         the same definitions as the feature tables (README \"Features from\n"
    "         FHIR\"). FILE (- for stdin) holds a CDS Hooks prefetch: an object with\n"
    "         patient, encounter, conditions, encounters and procedures (a resource,\n"
    "         an array or a searchset Bundle each). Prints the instance as one JSON\n"
    "         object in the /v1 predict format. Reads no warehouse.\n"
    "           --as-of DATE   prediction time (default: the encounter's end for\n"
    "                          readmission, its start for mortality and los)\n"
    "           --ndjson       FILE holds one prefetch per line; one line out per\n"
    "                          line in: the instance, or {\"error\",\"where\"} (exit 1)\n"
    "\n"
    "Exit codes: 0 ok (built or unchanged), 1 failed, 2 usage error.\n";

/* features build --set marts: one line per mart table, or one JSON object */
static int do_build_marts(int json)
{
    px_config cfg;
    px_err e = {0};
    PGconn *c = px_cli_connect(&cfg, 0, &e);
    if (!c) return px_cli_fail(&e);
    px_feat_marts_result r;
    int rc = px_feat_marts_build(c, &r, &e);
    PQfinish(c);
    if (rc != 0) return px_cli_fail(&e);
    if (json) {
        int ok = 1;
        cJSON *o = cJSON_CreateObject(), *t = NULL;
        cli_json_ok(&ok, o);
        cli_json_ok(&ok, cJSON_AddStringToObject(o, "set", "marts"));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "seconds", r.seconds));
        cli_json_ok(&ok, t = cJSON_AddObjectToObject(o, "tables"));
        for (int i = 0; t && i < px_feat_marts_count; i++)
            cli_json_ok(&ok, cJSON_AddNumberToObject(t, px_feat_marts[i], (double)r.rows[i]));
        return cli_json_print(o, ok);
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
    PGconn *c = px_cli_connect(&cfg, 0, &e);
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

static int do_list(int argc, char **argv)
{
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else return px_cli_usage_error("features", "unknown option '%s'", argv[i]);
    }
    px_config cfg;
    px_err e = {0};
    PGconn *c = px_cli_connect(&cfg, 1, &e); /* reads only: never creates a warehouse */
    if (!c) return px_cli_fail(&e);
    int rc = PX_EXIT_OK;
    if (px_feat_list(c, json, stdout, &e) != 0) rc = px_cli_fail(&e);
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
    if (strcmp(argv[1], "fhir") == 0) return cmd_features_fhir(argc, argv);
    if (strcmp(argv[1], "build") == 0) return do_build(argc, argv);
    if (strcmp(argv[1], "list") == 0) return do_list(argc, argv);
    return px_cli_usage_error("features", "unknown subcommand '%s'", argv[1]);
}
