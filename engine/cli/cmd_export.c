/* cmd_export.c: prognos export: a de-identified research extract of a feature
 * table (features/export.c does the work). */
#include "engine/cli/cli.h"
#include "features/features.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos export --cohort readmission|mortality|los --out DIR [--format csv|jsonl]\n"
    "                      [--dates shift|year] [--date-shift-key FILE] [--max-shift-days D]\n"
    "                      [--min-cell K] [--min-zip3-patients N] [--force] [--json]\n"
    "\n"
    "Writes a de-identified extract of the latest build of features.<cohort> for analysts\n"
    "outside the organisation (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)), with a data dictionary\n"
    "and a manifest (row counts, SHA-256 of every file, the query, the ETL batches, the feature\n"
    "build, the parameters; no key material) beside the data:\n"
    "  DIR/data.csv | DIR/data.jsonl, DIR/data_dictionary.csv, DIR/manifest.json, DIR/SHA256SUMS\n"
    "No identifier or pseudonym leaves: encounter_id and patient_id become row_id and study_id,\n"
    "random numbers under a per-export key that is never stored. Ages over 89 are '90+'; ZIP3\n"
    "prefixes with fewer than N patients in the export are '000'; categorical levels (facility,\n"
    "department, state, ...) with fewer than K rows are 'suppressed'. The export is recorded in\n"
    "audit.events. Files are written under temporary names and renamed when complete.\n"
    "\n"
    "  --cohort NAME          readmission, mortality or los (required)\n"
    "  --out DIR              output directory, created when missing; must be empty (required)\n"
    "  --format csv|jsonl     data file format (default csv)\n"
    "  --dates shift|year     shift: each patient's dates moved back by a keyed offset of 1-D days\n"
    "                         (intervals within a patient kept; default); year: the year only, plus\n"
    "                         days from the patient's first admission in the export\n"
    "  --date-shift-key FILE  a secret file of at least 32 bytes: the same offsets in every export\n"
    "                         made with it (consistent re-exports); default: a random key per export\n"
    "  --max-shift-days D     largest offset in days (default 365, at most 3650)\n"
    "  --min-cell K           smallest category shown (default 11, the CMS cell-size rule)\n"
    "  --min-zip3-patients N  smallest ZIP3 area shown, in patients of the export (default 20)\n"
    "  --force                write into a non-empty DIR, replacing an earlier export there\n"
    "  --json                 print the result as JSON\n"
    "\n"
    "Exit codes: 0 ok, 1 failed (no feature table, database error, non-empty DIR), 2 usage error.\n"
    "Nothing is written when the export fails.\n";

static int int_opt(const char *name, const char *v, int lo, int hi, int *out)
{
    long long n;
    if (px_cli_ll(v, lo, hi, &n) != 0)
        return px_cli_usage_error("export", "%s must be an integer from %d to %d, got '%s'", name, lo, hi, v);
    *out = (int)n;
    return 0;
}

int cmd_export(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    px_export_params p = px_export_default_params();
    p.cohort = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--force") == 0) { p.force = 1; continue; }
        if (strcmp(a, "--json") == 0) { json = 1; continue; }
        if (!v) return px_cli_usage_error("export", "unknown or incomplete option '%s'", a);
        i++;
        if (strcmp(a, "--cohort") == 0) p.cohort = v;
        else if (strcmp(a, "--out") == 0) p.out_dir = v;
        else if (strcmp(a, "--date-shift-key") == 0) p.date_shift_key_file = v;
        else if (strcmp(a, "--format") == 0) {
            if (strcmp(v, "csv") == 0) p.jsonl = 0;
            else if (strcmp(v, "jsonl") == 0) p.jsonl = 1;
            else return px_cli_usage_error("export", "unknown format '%s' (csv or jsonl)", v);
        } else if (strcmp(a, "--dates") == 0) {
            if (strcmp(v, "shift") == 0) p.dates_year = 0;
            else if (strcmp(v, "year") == 0) p.dates_year = 1;
            else return px_cli_usage_error("export", "unknown --dates '%s' (shift or year)", v);
        } else if (strcmp(a, "--max-shift-days") == 0) {
            if (int_opt(a, v, 1, 3650, &p.max_shift_days)) return PX_EXIT_USAGE;
        } else if (strcmp(a, "--min-cell") == 0) {
            if (int_opt(a, v, 1, 1000000, &p.min_cell)) return PX_EXIT_USAGE;
        } else if (strcmp(a, "--min-zip3-patients") == 0) {
            if (int_opt(a, v, 1, 100000000, &p.min_zip3_patients)) return PX_EXIT_USAGE;
        } else {
            return px_cli_usage_error("export", "unknown option '%s'", a);
        }
    }
    if (!p.cohort) return px_cli_usage_error("export", "--cohort is required (readmission, mortality or los)");
    if (!px_feat_set_find(p.cohort))
        return px_cli_usage_error("export", "unknown cohort '%s' (readmission, mortality or los)", p.cohort);
    if (!p.out_dir || !*p.out_dir) return px_cli_usage_error("export", "--out DIR is required");

    px_config cfg;
    px_err e = {0};
    PGconn *c = px_cli_connect(&cfg, 1, &e); /* reads only: never creates a warehouse */
    if (!c) return px_cli_fail(&e);
    px_export_result r;
    int rc = px_feat_export(c, &p, &r, &e);
    PQfinish(c);
    if (rc != 0) return px_cli_fail(&e);
    px_log(PX_LOG_INFO, "export %s: %lld rows, %lld patients to %s (sha256 %s)", p.cohort, r.rows, r.patients, p.out_dir,
           r.data_sha256);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        int ok = o != NULL;
        cli_json_ok(&ok, cJSON_AddStringToObject(o, "cohort", p.cohort));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "rows", (double)r.rows));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "patients", (double)r.patients));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "columns", r.columns));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "suppressed_levels", r.suppressed_levels));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "ages_grouped", (double)r.ages_grouped));
        cli_json_ok(&ok, cJSON_AddNumberToObject(o, "zip3_recoded", (double)r.zip3_recoded));
        cli_json_ok(&ok, cJSON_AddStringToObject(o, "sha256", r.data_sha256));
        if (cli_json_print(o, ok) != 0) return PX_EXIT_FAIL;
    } else
        printf("exported %s: %lld rows, %lld patients, %d columns to %s (%d levels suppressed, %lld ages grouped 90+, "
               "%lld rows with ZIP3 000)\n",
               p.cohort, r.rows, r.patients, r.columns, p.out_dir, r.suppressed_levels, r.ages_grouped, r.zip3_recoded);
    return PX_EXIT_OK;
}
