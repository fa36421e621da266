/* cmd_generate.c: `prognos generate`, a synthetic canonical dataset with planted
 * effects and the truth.json that documents them (engine/GENERATOR.md). Parses
 * its options, calls px_generate() and prints a one-line summary or JSON. */
#include "engine/cli/cli.h"
#include "engine/fhir.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: prognos generate --out DIR [--patients N] [--seed S] [--facilities K]\n"
    "                        [--small-facilities N] [--years FIRST-LAST]\n"
    "                        [--format canonical|fhir] [--json]\n"
    "\n"
    "Writes a synthetic dataset in the canonical CSV layout (facilities.csv,\n"
    "providers.csv, patients.csv, encounters.csv, diagnoses.csv, procedures.csv)\n"
    "and truth.json: the models, coefficients and planted facility effects the\n"
    "data was drawn from, realized counts and rates, and the AUC of the true\n"
    "probabilities. Same options, same bytes. All identifiers are fake.\n"
    "\n"
    "options:\n"
    "  --out DIR          output directory, created if missing (required)\n"
    "  --patients N       number of patients, 1-100000000 (default 10000);\n"
    "                     about 4 stays each\n"
    "  --seed S           random seed, 0-18446744073709551615 (default 1)\n"
    "  --facilities K     number of hospitals, 1-9999 (default 40); one in ten is\n"
    "                     planted worse and one in ten better than expected\n"
    "  --small-facilities N\n"
    "                     add N tiny facilities, 0-100000 (default 0), with 1-10\n"
    "                     stays each (one extra patient each, whose first 1-10\n"
    "                     stays are there): the long tail of real data; the\n"
    "                     other facilities and patients come out unchanged\n"
    "  --years A-B        admission years, inclusive (default 2019-2023); a stay\n"
    "                     may last up to 365 days, and every date must be past\n"
    "  --format F         canonical (default): the CSV files above; fhir: the same\n"
    "                     data as FHIR R4 Bulk Data NDJSON (Organization,\n"
    "                     Practitioner, Patient, Encounter, Condition and\n"
    "                     Procedure.ndjson, ICD-10-CM/PCS coded; README \"FHIR\")\n"
    "                     and truth.json\n"
    "  --json             print the summary as JSON\n"
    "  -h, --help         show this help\n"
    "\n"
    "engine/GENERATOR.md describes the models and how to use truth.json.\n";

/* "2019-2023" or "2021"; range checks are the library's. */
static int parse_years(const char *s, int *first, int *last)
{
    char *end;
    if (*s < '0' || *s > '9') return -1;
    errno = 0;
    long a = strtol(s, &end, 10), b = a;
    if (*end == '-') {
        const char *t = end + 1;
        if (*t < '0' || *t > '9') return -1;
        b = strtol(t, &end, 10);
    }
    if (errno || *end || a > 9999 || b > 9999) return -1;
    *first = (int)a;
    *last = (int)b;
    return 0;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void print_summary(const px_gen_params *p, const px_gen_result *r, double secs, int json)
{
    if (!json) {
        printf("generated %lld patients, %lld encounters, %lld diagnoses, %lld procedures, "
               "%lld facilities, %lld providers in %s (%.1f s)\n",
               r->patients, r->encounters, r->diagnoses, r->procedures, r->facilities, r->providers,
               p->out_dir, secs);
        return;
    }
    printf("{\"patients\":%lld,\"encounters\":%lld,\"diagnoses\":%lld,\"procedures\":%lld,"
           "\"facilities\":%lld,\"providers\":%lld,\"seed\":%llu,\"out\":",
           r->patients, r->encounters, r->diagnoses, r->procedures, r->facilities, r->providers,
           (unsigned long long)p->seed);
    json_str(stdout, p->out_dir);
    printf(",\"seconds\":%.3f}\n", secs);
}

/* Parses one option (and its value) at argv[*i]; returns 0 or an exit code. */
static int parse_option(int argc, char **argv, int *i, px_gen_params *p, int *json, int *fhir)
{
    char name[64];
    const char *arg = argv[*i], *val = NULL, *eq = strchr(arg, '=');
    if (strncmp(arg, "--", 2) != 0) return px_cli_usage_error("generate", "unexpected argument '%s'", arg);
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len >= sizeof name) return px_cli_usage_error("generate", "unknown option '%s'", arg);
    memcpy(name, arg, len);
    name[len] = '\0';
    if (strcmp(name, "--json") == 0 && !eq) {
        *json = 1;
        return 0;
    }
    if (strcmp(name, "--out") && strcmp(name, "--patients") && strcmp(name, "--seed") &&
        strcmp(name, "--facilities") && strcmp(name, "--small-facilities") && strcmp(name, "--years") &&
        strcmp(name, "--format"))
        return px_cli_usage_error("generate", "unknown option '%s'", arg);
    if (eq) val = eq + 1;
    else if (*i + 1 < argc) val = argv[++*i];
    else return px_cli_usage_error("generate", "option '%s' needs a value", name);
    long long v;
    if (strcmp(name, "--format") == 0) {
        if (strcmp(val, "canonical") && strcmp(val, "fhir"))
            return px_cli_usage_error("generate", "--format must be canonical or fhir, not '%s'", val);
        *fhir = strcmp(val, "fhir") == 0;
    } else if (strcmp(name, "--out") == 0) {
        if (!*val) return px_cli_usage_error("generate", "--out needs a directory");
        p->out_dir = val;
    } else if (strcmp(name, "--patients") == 0) {
        if (px_cli_ll(val, 1, 100000000LL, &v) < 0)
            return px_cli_usage_error("generate", "--patients must be a whole number 1-100000000, not '%s'", val);
        p->patients = v;
    } else if (strcmp(name, "--seed") == 0) {
        if (px_cli_u64(val, &p->seed) < 0)
            return px_cli_usage_error("generate", "--seed must be a whole number 0-18446744073709551615, not '%s'", val);
    } else if (strcmp(name, "--facilities") == 0) {
        if (px_cli_ll(val, 1, 9999, &v) < 0)
            return px_cli_usage_error("generate", "--facilities must be a whole number 1-9999, not '%s'", val);
        p->facilities = (int)v;
    } else if (strcmp(name, "--small-facilities") == 0) {
        if (px_cli_ll(val, 0, 100000, &v) < 0)
            return px_cli_usage_error("generate", "--small-facilities must be a whole number 0-100000, not '%s'", val);
        p->small_facilities = (int)v;
    } else if (parse_years(val, &p->start_year, &p->end_year) < 0) {
        return px_cli_usage_error("generate", "--years must look like 2019-2023, not '%s'", val);
    }
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    px_gen_params p = px_gen_default_params();
    int json = 0, fhir = 0;
    for (int i = 1; i < argc; i++) {
        int rc = parse_option(argc, argv, &i, &p, &json, &fhir);
        if (rc) return rc;
    }
    if (!p.out_dir) return px_cli_usage_error("generate", "missing --out DIR");
    px_gen_result r;
    px_err e = {0};
    double t0 = px_mono_s();
    int rc = fhir ? px_generate_fhir(&p, &r, &e) : px_generate(&p, &r, &e);
    if (rc == PX_EINVAL && !fhir) {  /* parameters the library refused (years reaching today): usage */
        px_err_print(&e);
        fputs("Try 'prognos generate --help'.\n", stderr);
        return PX_EXIT_USAGE;
    }
    if (rc < 0) return px_cli_fail(&e);
    print_summary(&p, &r, px_mono_s() - t0, json);
    return PX_EXIT_OK;
}
