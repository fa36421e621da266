/* cmd_retention.c: prognos db retention set|apply|show -- retention of the fact
 * tables' yearly partitions, applied by pg_partman (engine/retention.c). */
#include "engine/cli/cli.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: prognos db retention set --older-than AGE --action detach|drop|archive\n"
    "                                [--table fact_encounter|fact_diagnosis|fact_procedure|all]\n"
    "       prognos db retention apply [--archive-dir DIR] [--json]\n"
    "       prognos db retention show [--json]\n"
    "\n"
    "Retention of the fact tables' yearly partitions (by admission year), applied\n"
    "by pg_partman (Debian package postgresql-15-partman; set installs the\n"
    "extension when missing, which needs a superuser).\n"
    "\n"
    "set      the policy of one fact table, or of all three (default all: a stay,\n"
    "         its diagnoses and its procedures leave together): a partition whose\n"
    "         whole year ended more than AGE ago is removed by the next apply.\n"
    "           --older-than AGE  7y, 18m or 400d\n"
    "           --action detach   the partition becomes a table of its own in wh\n"
    "                             (no longer read; drop it or re-attach it yourself)\n"
    "           --action drop     dropped\n"
    "           --action archive  written to DIR/<partition>.csv.gz (gzip'd CSV with a\n"
    "                             header line), its SHA-256 recorded, then dropped\n"
    "apply    run pg_partman's retention (drop_partition_time) for every policy in\n"
    "         one transaction; each partition removed is recorded (prognos db\n"
    "         retention show) and is an audit event (retention.remove, and\n"
    "         retention.archive for its file); then the archives are written.\n"
    "         An archive a killed run left unwritten is written by the next one.\n"
    "           --archive-dir DIR  default $PROGNOS_HOME/archive\n"
    "         On a distributed warehouse (prognos db shards) pg_partman cannot\n"
    "         manage the hash partitions over shards: apply uses its rule itself and\n"
    "         removes each expired year from every shard with two-phase commit\n"
    "         (archive: the rows of all shards in one file, written first; detach:\n"
    "         each shard's rows moved to px_shard.<table>_pYYYY there). A killed\n"
    "         apply is resolved by prognos db shards recover or the next apply.\n"
    "show     the policies and every partition removed, with archive file and SHA-256\n"
    "\n"
    "Removed years are refused afterwards: kpi report for a period inside one, kpi\n"
    "compute and features build while a stay remains whose diagnoses or procedures\n"
    "were removed, and an ETL load with stays of a removed year.\n"
    "\n"
    "Exit codes: 0 ok, 1 failed, 2 usage error, 3 apply removed nothing.\n";

static const char show_sql[] =
    "SELECT json_build_object('policies', (SELECT coalesce(json_agg(json_build_object('table', table_name,"
    " 'older_than', older_than::text, 'action', action, 'set_at', set_at) ORDER BY table_name), '[]')"
    " FROM wh.retention_policy), 'removed', (SELECT coalesce(json_agg(json_build_object('table', table_name,"
    " 'partition', partition_name, 'period_start', period_start, 'period_end', period_end, 'action', action,"
    " 'removed_at', removed_at, 'archive_file', archive_file, 'archive_sha256', archive_sha256,"
    " 'archive_rows', archive_rows, 'archive_bytes', archive_bytes, 'archived_at', archived_at)"
    " ORDER BY period_start, table_name), '[]') FROM wh.retention_removed))";

static int do_show(PGconn *c, int json)
{
    px_err e = {0};
    PGresult *r = NULL;
    if (json) {
        if (px_db_query(c, &e, "cannot read the retention state", &r, show_sql, 0, NULL) != 0) return px_cli_fail(&e);
        printf("%s\n", PQgetvalue(r, 0, 0));
        PQclear(r);
        return PX_EXIT_OK;
    }
    if (px_db_query(c, &e, "cannot read the retention policies", &r,
                    "SELECT table_name, older_than::text, action FROM wh.retention_policy ORDER BY 1", 0, NULL) != 0)
        return px_cli_fail(&e);
    if (PQntuples(r) == 0) printf("no retention policy\n");
    for (int i = 0; i < PQntuples(r); i++)
        printf("policy  wh.%-16s older than %-10s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    if (px_db_query(c, &e, "cannot read the removed partitions", &r,
                    "SELECT partition_name, period_start, period_end - 1, action, coalesce(archive_file, ''),"
                    " coalesce(archive_sha256, '') FROM wh.retention_removed ORDER BY period_start, table_name",
                    0, NULL) != 0)
        return px_cli_fail(&e);
    for (int i = 0; i < PQntuples(r); i++)
        printf("removed wh.%-22s %s..%s %-7s %s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
               PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5));
    PQclear(r);
    return PX_EXIT_OK;
}

static int do_apply(PGconn *c, const px_config *cfg, const char *dir, int json)
{
    px_err e = {0};
    char def[4200];
    if (!dir) {
        snprintf(def, sizeof def, "%s/archive", cfg->home);
        dir = def;
    }
    px_retention_result r;
    int rc = px_retention_apply(c, dir, &r, &e);
    if (json) {
        printf("{\"removed\":%d,\"archived\":%d,\"partitions\":[", r.removed, r.archived);
        for (int i = 0; i < r.n; i++) {
            const px_retention_item *it = &r.items[i];
            printf("%s{\"table\":\"wh.%s\",\"partition\":\"wh.%s\",\"period_start\":\"%s\",\"period_end\":\"%s\","
                   "\"action\":\"%s\"",
                   i ? "," : "", it->table, it->partition, it->period_start, it->period_end, it->action);
            if (it->archive_sha256[0])
                printf(",\"archive_file\":\"%s\",\"archive_sha256\":\"%s\",\"archive_rows\":%lld,\"archive_bytes\":%lld",
                       it->archive_file, it->archive_sha256, it->archive_rows, it->archive_bytes);
            printf("}");
        }
        printf("]}\n");
    } else {
        for (int i = 0; i < r.n; i++) {
            const px_retention_item *it = &r.items[i];
            printf("wh.%s (%s..%s): %s%s%s\n", it->partition, it->period_start, it->period_end, it->action,
                   it->archive_sha256[0] ? " to " : "", it->archive_file);
        }
        printf("%d partition%s removed, %d archived\n", r.removed, r.removed == 1 ? "" : "s", r.archived);
    }
    int nothing = r.n == 0;
    px_retention_result_release(&r);
    if (rc != 0) return px_cli_fail(&e);
    return nothing ? PX_EXIT_NOTHING : PX_EXIT_OK;
}

/* argv[0] is "retention" */
int cmd_db_retention(int argc, char **argv)
{
    if (argc < 2 || px_cli_wants_help(argc, argv)) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? PX_EXIT_USAGE : PX_EXIT_OK;
    }
    const char *sub = argv[1], *table = "all", *age = NULL, *action = NULL, *dir = NULL;
    int json = 0;
    if (strcmp(sub, "set") != 0 && strcmp(sub, "apply") != 0 && strcmp(sub, "show") != 0)
        return px_cli_usage_error("db retention", "unknown subcommand '%s'", sub);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int is_set = strcmp(sub, "set") == 0;
        if (strcmp(a, "--json") == 0 && !is_set) json = 1;
        else if (is_set && strcmp(a, "--table") == 0 && v) table = argv[++i];
        else if (is_set && strcmp(a, "--older-than") == 0 && v) age = argv[++i];
        else if (is_set && strcmp(a, "--action") == 0 && v) action = argv[++i];
        else if (strcmp(sub, "apply") == 0 && strcmp(a, "--archive-dir") == 0 && v) dir = argv[++i];
        else return px_cli_usage_error("db retention", "unknown or incomplete option '%s'", a);
    }
    px_err e = {0};
    char buf[64];
    if (strcmp(sub, "set") == 0) {
        if (!age || !action) return px_cli_usage_error("db retention", "set needs --older-than and --action");
        if (px_retention_parse_age(age, buf, sizeof buf, &e) != 0)
            return px_cli_usage_error("db retention", "--older-than %s: %s (%s)", age, e.msg, e.hint);
        if (strcmp(action, "detach") != 0 && strcmp(action, "drop") != 0 && strcmp(action, "archive") != 0)
            return px_cli_usage_error("db retention", "--action '%s': use detach, drop or archive", action);
        if (strcmp(table, "all") != 0 && strcmp(table, "fact_encounter") != 0 && strcmp(table, "fact_diagnosis") != 0 &&
            strcmp(table, "fact_procedure") != 0)
            return px_cli_usage_error("db retention", "--table '%s': use fact_encounter, fact_diagnosis, "
                                      "fact_procedure or all", table);
    }
    px_config cfg;
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);
    PGconn *c = strcmp(sub, "show") == 0 ? px_db_open(&cfg, &e) : px_db_connect(&cfg, &e);
    if (!c) return px_cli_fail(&e);
    int rc;
    if (strcmp(sub, "set") == 0) {
        rc = px_retention_set(c, table, age, action, &e) == 0 ? PX_EXIT_OK : px_cli_fail(&e);
        if (rc == PX_EXIT_OK)
            printf("retention: %s of %s older than %s (apply with: prognos db retention apply)\n", action,
                   strcmp(table, "all") == 0 ? "every fact table's partitions" : table, buf);
    } else if (strcmp(sub, "apply") == 0) {
        rc = do_apply(c, &cfg, dir, json);
    } else {
        rc = do_show(c, json);
    }
    PQfinish(c);
    return rc;
}
