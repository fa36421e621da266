/* cmd_shards.c: prognos db shards add|distribute|list -- a sharded warehouse over
 * postgres_fdw (engine/shards.c; README, Scale-out). */
#include "engine/cli/cli.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: prognos db shards add URI [--json]\n"
    "       prognos db shards distribute [--json]\n"
    "       prognos db shards list [--json]\n"
    "       prognos db shards recover [--json]\n"
    "\n"
    "A sharded warehouse over postgres_fdw (README, Scale-out): the fact tables\n"
    "hash-partitioned by patient, each partition a foreign table on a shard; the\n"
    "dimensions, registry, KPIs and audit stay on this (coordinator) database.\n"
    "\n"
    "add         register a shard: URI is a libpq URI or conninfo of a PostgreSQL\n"
    "            server (13+); its schema px_shard gets the empty fact tables, this\n"
    "            database a foreign server px_shard_N and a user mapping (the URI's\n"
    "            user and password). Needs a superuser here (CREATE EXTENSION\n"
    "            postgres_fdw) and refuses a shard whose tables hold rows. After\n"
    "            distribute the new shard takes its share: the fact tables are\n"
    "            re-partitioned to one more hash remainder (shard k of n holds\n"
    "            remainder k of modulus n) and the rows of other remainders move\n"
    "            between shards in one two-phase commit (pxs_<new>_<shard>); loads\n"
    "            and feature builds wait meanwhile.\n"
    "distribute  move every row of a single-node warehouse to the shards, in one\n"
    "            transaction: wh.fact_* become PARTITION BY HASH (patient_id) tables\n"
    "            of foreign partitions. Features, marts and KPIs then run unchanged;\n"
    "            prognos etl load writes each batch to the shards, atomically (two-\n"
    "            phase commit: PREPARE TRANSACTION 'px_<batch>_<shard>' on every\n"
    "            shard, the batch committed here, then COMMIT PREPARED).\n"
    "            Not built: retention on shards.\n"
    "list        the shards: number, foreign server, connection (no password)\n"
    "recover     resolve the prepared transactions a killed load (px_*) or add\n"
    "            (pxs_*) left on the shards: committed when this database recorded\n"
    "            the batch (etl.batches) or the shard (wh.shards), else rolled back\n"
    "            (waits for a running load). etl load, db start and add do the same\n"
    "            first.\n"
    "\n"
    "Shards need max_prepared_transactions > 0 (add refuses one without; the\n"
    "embedded clusters of prognos db init have 10).\n"
    "\n"
    "Exit codes: 0 ok, 1 failed, 2 usage error, 3 distribute: already distributed.\n";

int cmd_db_shards(int argc, char **argv)
{
    if (argc < 2 || px_cli_wants_help(argc, argv)) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? PX_EXIT_USAGE : PX_EXIT_OK;
    }
    const char *sub = argv[1], *uri = NULL;
    int json = 0;
    if (strcmp(sub, "add") != 0 && strcmp(sub, "distribute") != 0 && strcmp(sub, "list") != 0 &&
        strcmp(sub, "recover") != 0)
        return px_cli_usage_error("db shards", "unknown subcommand '%s'", sub);
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(sub, "add") == 0 && !uri && argv[i][0] != '-') uri = argv[i];
        else return px_cli_usage_error("db shards", "unknown option '%s'", argv[i]);
    }
    if (strcmp(sub, "add") == 0 && !uri) return px_cli_usage_error("db shards", "add needs the shard's URI");
    px_err e = {0};
    px_config cfg;
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);
    PGconn *c = strcmp(sub, "list") == 0 ? px_db_open(&cfg, &e) : px_db_connect(&cfg, &e);
    if (!c) return px_cli_fail(&e);
    int rc = PX_EXIT_OK;
    if (strcmp(sub, "add") == 0) {
        int id;
        if (px_shards_add(c, uri, &id, &e) != 0) rc = px_cli_fail(&e);
        else if (json) printf("{\"shard_id\":%d,\"server\":\"px_shard_%d\"}\n", id, id);
        else printf("shard %d added (foreign server px_shard_%d)\n", id, id);
    } else if (strcmp(sub, "distribute") == 0) {
        px_shards_result r;
        int x = px_shards_distribute(c, &r, &e);
        if (x == PX_ENOTHING) {
            if (!json) printf("the fact tables are already distributed\n");
            rc = PX_EXIT_NOTHING;
        } else if (x != 0) {
            rc = px_cli_fail(&e);
        } else if (json) {
            printf("{\"shards\":%d,\"fact_encounter\":%lld,\"fact_diagnosis\":%lld,\"fact_procedure\":%lld}\n",
                   r.shards, r.rows[0], r.rows[1], r.rows[2]);
        } else {
            printf("distributed to %d shards: %lld stays, %lld diagnoses, %lld procedures\n", r.shards, r.rows[0],
                   r.rows[1], r.rows[2]);
        }
    } else if (strcmp(sub, "recover") == 0) {
        px_shards_recovery rec;
        if (px_shards_recover(c, 0, &rec, &e) != 0) rc = px_cli_fail(&e);
        else if (json)
            printf("{\"shards\":%d,\"committed\":%d,\"rolled_back\":%d}\n", rec.shards, rec.committed,
                   rec.rolled_back);
        else
            printf("%d shards: %d in-doubt prepared transactions committed, %d rolled back\n", rec.shards,
                   rec.committed, rec.rolled_back);
    } else {
        PGresult *r = NULL;
        if (px_db_query(c, &e, "cannot read the shards", &r,
                        json ? "SELECT coalesce(json_agg(json_build_object('shard_id', shard_id, 'server', server_name,"
                               " 'conninfo', conninfo, 'added_at', added_at) ORDER BY shard_id), '[]') FROM wh.shards"
                             : "SELECT shard_id, server_name, conninfo FROM wh.shards ORDER BY shard_id",
                        0, NULL) != 0) {
            rc = px_cli_fail(&e);
        } else if (json) {
            printf("%s\n", PQgetvalue(r, 0, 0));
        } else {
            if (PQntuples(r) == 0) printf("no shards\n");
            for (int i = 0; i < PQntuples(r); i++)
                printf("%s  %s  %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
        }
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}
