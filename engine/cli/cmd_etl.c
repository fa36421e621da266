/* cmd_etl.c: prognos etl load | status | layout */
#include "engine/cli/cli.h"
#include "engine/internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: prognos etl load --format synpuf|canonical|postgres|fhir --source PATH|URI [--as-of DATE]\n"
    "                        [--future-dates reject|allow] [--max-reject-rate PCT] [--force] [--quiet] [--json]\n"
    "                        [--code-map FILE]\n"
    "       prognos etl status [--json]\n"
    "       prognos etl layout\n"
    "\n"
    "load     load one batch, in one transaction: every row is loaded or rejected with a\n"
    "         reason (etl.rejects); identifiers are pseudonymized before anything is stored;\n"
    "         files loaded before (same SHA-256) are skipped. Exit 0 committed, 1 failed or\n"
    "         rolled back (nothing stored; 'etl status' lists it with its reason), 2 usage,\n"
    "         3 nothing was new.\n"
    "           --format synpuf     a directory of CMS DE-SynPUF beneficiary summary and\n"
    "                               inpatient claims CSV files\n"
    "           --format canonical  a directory of canonical CSV files (see 'etl layout')\n"
    "           --format postgres   a libpq URI of a database holding the canonical tables\n"
    "           --format fhir       a directory of FHIR R4 Bulk Data NDJSON files (*.ndjson,\n"
    "                               any order): Patient, Encounter (inpatient stays: class\n"
    "                               IMP or ACUTE, or EMER admitted), Condition, Procedure\n"
    "                               (ICD-10-CM/PCS or ICD-9-CM codings), Organization,\n"
    "                               Practitioner; other resources are counted as skipped,\n"
    "                               by reason (etl status, etl.batch_files.skipped)\n"
    "           --code-map FILE     fhir: a CSV crosswalk with columns system, code,\n"
    "                               target_system (icd10|icd9), target_code for codes of\n"
    "                               other systems (SNOMED CT); without it such resources\n"
    "                               are skipped with a warning (unmapped_code_system)\n"
    "           --as-of YYYY-MM-DD  reference date for the future-date rule (default today)\n"
    "           --future-dates reject|allow\n"
    "                               reject (default): dates after the reference date are\n"
    "                               rejected (future_date), and births more than 130 years\n"
    "                               before it; allow: no rule against the reference date, for\n"
    "                               extracts whose dates are shifted per patient (the age at\n"
    "                               each admission, 0-120, is checked either way)\n"
    "           --max-reject-rate PCT\n"
    "                               roll the batch back and exit 1 when more than PCT percent\n"
    "                               (0-100, default 5) of the rows read are rejected; rows\n"
    "                               rejected as duplicate_key (already stored) do not count\n"
    "           --force             load files even if loaded before: rows already in the\n"
    "                               warehouse come back as duplicate_key; rows rejected for a\n"
    "                               reference that has since been loaded get another chance\n"
    "           --quiet             no progress bar    --json   machine-readable summary (on\n"
    "                               failure too: error, detail, rows read and rejected)\n"
    "         A sharded warehouse (prognos db shards distribute): the same checks and rejects;\n"
    "         each shard gets its patients' rows in a transaction of its own, all PREPAREd\n"
    "         (px_<batch>_<shard>), the batch commits here, then every shard commits. A load\n"
    "         first resolves what a killed one left prepared (db shards recover). Every shard\n"
    "         must be up. PX_TEST_KILL_AT=ship|prepared|committed|commit_prepared (tests\n"
    "         only) makes the load SIGKILL itself at that point of the commit.\n"
    "status   batches, files, rows read/loaded/rejected, rejects by reason, quality score;\n"
    "         loads that failed or were rolled back, with their reason. Exit 1 (with a hint)\n"
    "         when PROGNOS_HOME holds no warehouse: status never creates one\n"
    "layout   the canonical CSV layout, column by column\n";

static int print_layout(void)
{
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        const px_table *tab = &px_canonical[t];
        printf("%s: %s\n", tab->file, tab->doc);
        for (int i = 0; i < tab->ncols; i++) {
            const px_col *c = &tab->cols[i];
            static const char *const tn[] = {"text", "key", "identifier", "date", "integer", "number", "enum", "code",
                                                "date"};
            printf("  %-22s %-10s %-8s %s", c->name, tn[c->type], c->required ? "required" : "optional", c->doc);
            if (c->enum_values) {
                printf(" [");
                for (int k = 0; c->enum_values[k]; k++) printf("%s%s", k ? "|" : "", c->enum_values[k]);
                printf("]");
            }
            printf("\n");
        }
        printf("\n");
    }
    return PX_EXIT_OK;
}


/* The progress bar on a terminal's stderr (px_etl_params.on_progress): one line,
 * redrawn in place, cleared when the load is done. */
static void etl_bar(void *arg, const char *phase, const char *file, int pct)
{
    (void)arg;
    if (strcmp(phase, "done") == 0) {
        fprintf(stderr, "\r%*s\r", 80, "");
    } else if (strcmp(phase, "failed") == 0) {
        fprintf(stderr, "\n");
    } else if (pct < 0) {
        fprintf(stderr, "\r%-10s %-28.28s %-48s", phase, file, "");
    } else {
        char bar[41];
        int fill = pct * 40 / 100;
        for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
        bar[40] = '\0';
        fprintf(stderr, "\rloading %-28.28s [%s] %3d%%", file, bar, pct);
    }
    fflush(stderr);
}
static int do_load(int argc, char **argv)
{
    px_etl_params p = px_etl_default_params();
    const char *format = NULL;
    int json = 0, quiet = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) format = argv[++i];
        else if (strcmp(argv[i], "--source") == 0 && i + 1 < argc) p.source = argv[++i];
        else if (strcmp(argv[i], "--code-map") == 0 && i + 1 < argc) p.code_map = argv[++i];
        else if (strcmp(argv[i], "--as-of") == 0 && i + 1 < argc) p.today = argv[++i];
        else if (strcmp(argv[i], "--future-dates") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "allow") == 0) p.allow_future = 1;
            else if (strcmp(v, "reject") == 0) p.allow_future = 0;
            else return px_cli_usage_error("etl", "--future-dates must be reject or allow, not '%s'", v);
        } else if (strcmp(argv[i], "--max-reject-rate") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            double pct;
            if (px_cli_double(v, &pct) != 0 || !(pct >= 0 && pct <= 100))
                return px_cli_usage_error("etl", "--max-reject-rate needs a percentage 0-100, not '%s'", v);
            p.max_reject_rate = pct;
        } else if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(argv[i], "--quiet") == 0) quiet = 1;
        else if (strcmp(argv[i], "--force") == 0) p.force = 1;
        else return px_cli_usage_error("etl", "unknown or incomplete option '%s'", argv[i]);
    }
    if (!format) return px_cli_usage_error("etl", "load needs --format synpuf|canonical|postgres|fhir");
    if (strcmp(format, "synpuf") == 0) p.format = PX_FMT_SYNPUF;
    else if (strcmp(format, "canonical") == 0) p.format = PX_FMT_CANONICAL;
    else if (strcmp(format, "postgres") == 0) p.format = PX_FMT_POSTGRES;
    else if (strcmp(format, "fhir") == 0) p.format = PX_FMT_FHIR;
    else return px_cli_usage_error("etl", "unknown format '%s' (synpuf, canonical, postgres or fhir)", format);
    if (p.code_map && p.format != PX_FMT_FHIR) return px_cli_usage_error("etl", "--code-map is for --format fhir");
    if (!p.source) return px_cli_usage_error("etl", "load needs --source");
    if (!quiet && !json && isatty(STDERR_FILENO)) p.on_progress = etl_bar;

    px_config cfg;
    px_err e = {0};
    px_etl_result r;
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);
    int rc = px_etl_load(&cfg, &p, &r, &e);
    for (char *l = r.notes, *nl; *l; l = nl + 1) { /* one line per file, each ends in \n */
        if (!(nl = strchr(l, '\n'))) break;
        fprintf(stderr, "prognos: warning: %.*s\n", (int)(nl - l), l);
    }
    if (rc != 0 && rc != PX_ENOTHING) {
        if (json) { /* a scheduler reading stdout learns why, as well as the exit code */
            px_buf b = {0};
            px_buf_adds(&b, "{\"error\":");
            px_buf_json_str(&b, e.msg, strlen(e.msg));
            px_buf_adds(&b, ",\"detail\":");
            px_buf_json_str(&b, e.detail, strlen(e.detail));
            px_buf_printf(&b, ",\"rolled_back_for_rejects\":%s,\"rows_read\":%lld,\"rows_rejected\":%lld}",
                          rc == PX_EREJECTS ? "true" : "false", r.rows_read, r.rows_rejected);
            if (b.data) printf("%.*s\n", (int)b.len, b.data);
            px_buf_release(&b);
        }
        return px_cli_fail(&e);
    }
    if (json)
        printf("{\"batch_id\":%lld,\"files_loaded\":%d,\"files_skipped\":%d,\"rows_read\":%lld,"
               "\"rows_loaded\":%lld,\"rows_rejected\":%lld,\"rows_skipped\":%lld}\n",
               r.batch_id, r.files_loaded, r.files_skipped, r.rows_read, r.rows_loaded, r.rows_rejected,
               r.rows_skipped);
    if (rc == PX_ENOTHING) {
        if (!json) printf("%s\n", e.msg);
        return PX_EXIT_NOTHING;
    }
    if (!json) {
        printf("batch %lld: %d file%s loaded", r.batch_id, r.files_loaded, r.files_loaded == 1 ? "" : "s");
        if (r.files_skipped) printf(" (%d skipped: loaded before)", r.files_skipped);
        printf("; %lld rows read, %lld loaded, %lld rejected", r.rows_read, r.rows_loaded, r.rows_rejected);
        if (r.rows_skipped) printf(", %lld skipped (not held by the warehouse)", r.rows_skipped);
        printf("\n");
        if (r.rows_rejected) printf("see 'prognos etl status' and the table etl.rejects\n");
    }
    return PX_EXIT_OK;
}

int cmd_etl(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return PX_EXIT_USAGE;
    }
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    if (strcmp(argv[1], "load") == 0) return do_load(argc, argv);
    if (strcmp(argv[1], "layout") == 0) return argc == 2 ? print_layout() : px_cli_usage_error("etl", "layout takes no options");
    if (strcmp(argv[1], "status") == 0) {
        int json = 0;
        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--json") == 0) json = 1;
            else return px_cli_usage_error("etl", "unknown option '%s'", argv[i]);
        }
        px_config cfg;
        px_err e = {0};
        if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
        if (px_db_require(&cfg, &e) != 0) return px_cli_fail(&e); /* reads only: never creates a warehouse */
        px_log_open(cfg.home);
        return px_etl_status(&cfg, json, stdout, &e) == 0 ? PX_EXIT_OK : px_cli_fail(&e);
    }
    return px_cli_usage_error("etl", "unknown subcommand '%s'", argv[1]);
}
