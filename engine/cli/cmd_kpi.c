/* cmd_kpi.c: `prognos kpi compute|report`, risk-adjusted outcome KPIs with
 * intervals (px_kpi_compute) and the executive report (px_kpi_report). Parses
 * options, maps errors to exit codes: 0 ok, 1 failed, 2 usage, 3 nothing to do. */
#include "engine/cli/cli.h"
#include "kpi/kpi.h"
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos kpi compute [--period KINDS] [--model-version [MODEL=]REF]...\n"
    "                           [--conf C] [--min-cases N] [--byar-min N]\n"
    "                           [--reference pooled|facility] [--no-hierarchical] [--overdispersion]\n"
    "                           [--allow-failed-gates] [--score-in-c] [--force] [--json]\n"
    "       prognos kpi report --period P --out FILE.html [--json FILE] [--csv FILE]\n"
    "                          [--run ID] [--target MEASURE=VALUE]... [--targets FILE]\n"
    "                          [--benchmarks DIR]\n"
    "                          [--dp-epsilon E [--dp-seed S]]\n"
    "\n"
    "compute: scores the feature tables with the registered risk models (the\n"
    "champions unless --model-version says otherwise), and stores volume,\n"
    "30-day readmission, 30-day mortality, length of stay and cost per encounter\n"
    "for every period and unit (system, facility, department) in kpi.results:\n"
    "crude rates with Wilson intervals, O/E with exact Poisson (Byar from --byar-min\n"
    "events) or robust intervals, risk-standardized and empirical-Bayes smoothed\n"
    "rates, funnel limits, better / no different / worse flags; cells with fewer\n"
    "than --min-cases cases are suppressed. Each row names the model version, the\n"
    "data batches and the method. Exit 3 when an identical run is stored.\n"
    "A measure whose champion is missing or failed its quality gates (see prognos\n"
    "train --help) is computed crude: observed rates with intervals, no expected\n"
    "count, O/E or flag, no model named, and the method says why; the other\n"
    "measures are risk-adjusted as usual, and the output lists what was crude.\n"
    "\n"
    "report: writes one period of a stored run as a self-contained HTML page\n"
    "(opens without network), and optionally as JSON and CSV.\n"
    "\n"
    "compute options:\n"
    "  --period KINDS       month, quarter, year, all, or a comma list\n"
    "                       (default: month,quarter,year,all)\n"
    "  --model-version R    registry reference for all three models (3, v3,\n"
    "                       champion, challenger, latest), or MODEL=REF for one\n"
    "                       (readmission, mortality, los); repeatable\n"
    "  --conf C             interval level, 0.5-0.9999 (default 0.95)\n"
    "  --min-cases N        suppress cells with fewer cases (default 25, CMS)\n"
    "  --byar-min N         use Byar's approximation from N events (default 50;\n"
    "                       values below 6 still give exact limits at 5 events or fewer)\n"
    "  --reference R        pooled (default): expected = the model's predictions as\n"
    "                       they are (indirect standardization: the system's O/E is\n"
    "                       1 up to calibration on the rows the model was fitted on);\n"
    "                       facility: each model's predictions shifted by the\n"
    "                       DerSimonian-Laird mean of the facility intercepts (an\n"
    "                       explicit option: unstable when most facilities are small)\n"
    "  --no-hierarchical    facilities by O/E only; by default a model version that\n"
    "                       stores a hierarchical model (prognos train fits it) gives\n"
    "                       each facility CMS's standardized ratio sr = predicted /\n"
    "                       expected (shrunken facility intercept / mean intercept),\n"
    "                       srsr = sr x the system's rate, and the flag from its interval\n"
    "  --overdispersion     widen funnel limits by Spiegelhalter's phi when > 1\n"
    "  --allow-failed-gates adjust with risk models that failed their quality gates\n"
    "                       (default: such a measure is computed crude; a model named\n"
    "                       with --model-version that failed is refused, exit 1)\n"
    "  --score-in-c         score every model in C through the feature reader (the\n"
    "                       path SVMs always take) instead of the model compiled to\n"
    "                       SQL and run inside PostgreSQL; same results to rounding,\n"
    "                       several times slower: for checking the compiled models\n"
    "  --force              compute even if an identical run is stored\n"
    "  --json               print the run summary as JSON\n"
    "\n"
    "report options:\n"
    "  --period P           2023, 2023-Q2, 2023-06, all, or month|quarter|year for\n"
    "                       the latest complete period of that kind (required)\n"
    "  --out FILE           the HTML report (required unless --json or --csv)\n"
    "  --json FILE          the period's results as JSON\n"
    "  --csv FILE           the period's results as CSV\n"
    "  --run ID             a given KPI run (default: the latest holding P)\n"
    "  --target M=V         headline target for a measure (volume, readmission,\n"
    "                       mortality as a proportion, los in days, cost in\n"
    "                       dollars); default: the case-mix expected value\n"
    "  --targets FILE       targets someone set, JSON ([{\"measure\": \"readmission\",\n"
    "                       \"value\": 0.15, \"direction\": \"lower\", \"source\": \"board\"}])\n"
    "                       or CSV with the header measure,value,direction,source\n"
    "                       (direction lower|higher, default lower except volume;\n"
    "                       rates as proportions); overrides --target per measure.\n"
    "                       Without a target a card shows only what is expected for\n"
    "                       the case mix\n"
    "  --benchmarks DIR     national rates from the public CMS files in DIR:\n"
    "                       Hospital Compare outcome-of-care-measures.csv (30-day\n"
    "                       readmission and mortality, heart attack, heart failure,\n"
    "                       pneumonia, patient-weighted) and the newest\n"
    "                       FY_*_Hospital_Readmissions_Reduction_Program_Hospital.csv\n"
    "                       (expected readmission rate, discharge-weighted)\n"
    "  --dp-epsilon E       differentially private release: Laplace noise of\n"
    "                       scale 1/E on every count (LOS and cost withheld)\n"
    "  --dp-seed S          seed of the noise (default 1): same seed, same release\n"
    "  -h, --help           show this help\n"
    "\n"
    "Exit codes: 0 ok, 1 failed (the message names what), 2 usage error (report:\n"
    "also a bad period, or a --targets / --benchmarks file the message names by\n"
    "line and field), 3 nothing to do (compute: an identical run is already stored).\n";

/* A finite number in lo..hi; 0 ok, -1 otherwise. */
static int parse_double(const char *s, double lo, double hi, double *v)
{
    double x;
    if (px_cli_double(s, &x) != 0 || !(x >= lo && x <= hi)) return -1;
    *v = x;
    return 0;
}

static PGconn *connect_db(px_err *e)
{
    px_config cfg;
    if (px_config_load(&cfg, e) != 0) return NULL;
    if (px_db_require(&cfg, e) != 0) return NULL; /* a report reads: it never creates a warehouse */
    px_log_open(cfg.home);
    return px_db_connect(&cfg, e);
}

static int kpi_compute(int argc, char **argv)
{
    px_kpi_params p = px_kpi_default_params();
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        long long n;
        if (strcmp(a, "--period") == 0 && v) {
            if (px_kpi_periods_parse(v, &p.periods) != 0)
                return px_cli_usage_error("kpi compute", "--period '%s': use month, quarter, year, all or a comma list", v);
            i++;
        } else if (strcmp(a, "--model-version") == 0 && v) {
            const char *eq = strchr(v, '=');
            if (!eq) {
                if (!*v) return px_cli_usage_error("kpi compute", "--model-version needs a reference");
                p.model_ref[0] = p.model_ref[1] = p.model_ref[2] = v;
            } else {
                static const char *const names[3] = {"readmission", "mortality", "los"};
                int k = -1;
                for (int j = 0; j < 3; j++)
                    if (strlen(names[j]) == (size_t)(eq - v) && strncmp(v, names[j], (size_t)(eq - v)) == 0) k = j;
                if (k < 0 || !eq[1])
                    return px_cli_usage_error("kpi compute",
                                              "--model-version '%s': use REF or MODEL=REF with MODEL readmission, "
                                              "mortality or los", v);
                p.model_ref[k] = eq + 1;
            }
            i++;
        } else if (strcmp(a, "--conf") == 0 && v) {
            if (parse_double(v, 0.5, 0.9999, &d) != 0)
                return px_cli_usage_error("kpi compute", "--conf '%s': a level between 0.5 and 0.9999", v);
            p.conf = d;
            i++;
        } else if (strcmp(a, "--min-cases") == 0 && v) {
            if (px_cli_ll(v, 0, 1000000, &n) != 0)
                return px_cli_usage_error("kpi compute", "--min-cases '%s': a count 0-1000000", v);
            p.min_cases = (int)n;
            i++;
        } else if (strcmp(a, "--byar-min") == 0 && v) {
            if (parse_double(v, 0, 1e12, &d) != 0)
                return px_cli_usage_error("kpi compute", "--byar-min '%s': a number of events", v);
            p.byar_min_events = d;
            i++;
        } else if (strcmp(a, "--reference") == 0 && v) {
            if (strcmp(v, "facility") == 0)
                p.reference = PX_KPI_REF_FACILITY;
            else if (strcmp(v, "pooled") == 0)
                p.reference = PX_KPI_REF_POOLED;
            else
                return px_cli_usage_error("kpi compute", "--reference '%s': use facility or pooled", v);
            i++;
        } else if (strcmp(a, "--no-hierarchical") == 0) {
            p.no_hierarchical = 1;
        } else if (strcmp(a, "--overdispersion") == 0) {
            p.overdispersion = 1;
        } else if (strcmp(a, "--force") == 0) {
            p.force = 1;
        } else if (strcmp(a, "--allow-failed-gates") == 0) {
            p.allow_failed_gates = 1;
        } else if (strcmp(a, "--score-in-c") == 0) {
            p.score_in_c = 1;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else {
            return px_cli_usage_error("kpi compute", "unknown or incomplete option '%s'", a);
        }
    }
    px_err e = {0};
    px_config cfg;
    PGconn *c = px_cli_connect(&cfg, 0, &e);
    if (!c) return px_cli_fail(&e);
    px_kpi_run_info info;
    /* retention: no KPI over stays that lost their diagnoses or procedures, nor
     * from feature tables that still hold a removed period */
    if (px_retention_check_partial(c, "kpi compute", &e) != 0 || px_retention_check_features(c, "kpi compute", &e) != 0) {
        PQfinish(c);
        return px_cli_fail(&e);
    }
    int rc = px_kpi_compute(c, &cfg, &p, &info, &e);
    PQfinish(c);
    if (rc != 0 && rc != PX_ENOTHING) return px_cli_fail(&e);
    if (json)
        printf("{\"run_id\":%lld,\"unchanged\":%s,\"models\":{\"readmission\":%d,\"mortality\":%d,\"los\":%d},"
               "\"encounters\":%lld,\"scored\":%lld,\"results\":%lld,\"seconds\":%.3f,\"seconds_score\":%.3f,"
               "\"seconds_sql\":%.3f,\"seconds_inputs\":%.3f,\"seconds_stats\":%.3f,\"seconds_store\":%.3f,"
               "\"scored_in_c\":{\"readmission\":%s,\"mortality\":%s,\"los\":%s},\"reference_shift\":{\"readmission\":%.6g,\"mortality\":%.6g,\"los\":%.6g},"
               "\"crude\":[%s%s%s%s%s],\"skipped\":[%s%s%s%s%s],"
               "\"hierarchical\":{\"readmission\":%s,\"mortality\":%s,\"los\":%s}}\n",
               info.run_id, info.unchanged ? "true" : "false", info.model_version[0], info.model_version[1],
               info.model_version[2], info.encounters, info.scored, info.results, info.seconds, info.seconds_score,
               info.seconds_sql, info.seconds_inputs, info.seconds_stats, info.seconds_store,
               info.scored_in_c[0] ? "true" : "false", info.scored_in_c[1] ? "true" : "false",
               info.scored_in_c[2] ? "true" : "false", info.reference_shift[0], info.reference_shift[1], info.reference_shift[2],
               info.crude[0] ? "\"readmission\"" : "", info.crude[0] && (info.crude[1] || info.crude[2]) ? "," : "",
               info.crude[1] ? "\"mortality\"" : "", info.crude[1] && info.crude[2] ? "," : "",
               info.crude[2] ? "\"los\"" : "",
               info.skipped[0] ? "\"readmission\"" : "", info.skipped[0] && (info.skipped[1] || info.skipped[2]) ? "," : "",
               info.skipped[1] ? "\"mortality\"" : "", info.skipped[1] && info.skipped[2] ? "," : "",
               info.skipped[2] ? "\"los\"" : "",
               info.hierarchical[0] ? "true" : "false", info.hierarchical[1] ? "true" : "false",
               info.hierarchical[2] ? "true" : "false");
    else
        printf("kpi: %s\n", info.summary);
    if (info.notes[0]) fprintf(stderr, "prognos kpi compute: %s\n", info.notes);
    px_log(PX_LOG_INFO, "kpi compute: %s", info.summary);
    return rc == PX_ENOTHING ? PX_EXIT_NOTHING : PX_EXIT_OK;
}

/* 1 when s can name a report period (a kind, "all", 2023, 2023-Q2, 2023-06):
 * a usage error is told before the warehouse is looked for. The library
 * checks the same again (px_kpi_report, PX_EINVAL). */
static int period_syntax_ok(const char *s)
{
    int flags, n = (int)strlen(s);
    if (px_kpi_periods_parse(s, &flags) == 0 && !strchr(s, ',')) return 1;
    for (int i = 0; i < 4; i++)
        if (i >= n || s[i] < '0' || s[i] > '9') return 0;
    if (n == 4) return 1;
    if (n != 7 || s[4] != '-') return 0;
    if (s[5] == 'Q') return s[6] >= '1' && s[6] <= '4';
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    return s[5] >= '0' && s[5] <= '1' && s[6] >= '0' && s[6] <= '9' && m >= 1 && m <= 12;
}

static int kpi_report(int argc, char **argv)
{
    px_kpi_report_params p = px_kpi_report_default_params();
    p.dp_seed = 1;
    int seed_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        long long n;
        if (strcmp(a, "--period") == 0 && v) {
            p.period = v;
            i++;
        } else if (strcmp(a, "--out") == 0 && v) {
            p.html_path = v;
            i++;
        } else if (strcmp(a, "--json") == 0 && v) {
            p.json_path = v;
            i++;
        } else if (strcmp(a, "--csv") == 0 && v) {
            p.csv_path = v;
            i++;
        } else if (strcmp(a, "--run") == 0 && v) {
            if (px_cli_ll(v, 1, (long long)9e18, &n) != 0) return px_cli_usage_error("kpi report", "--run '%s': a run id", v);
            p.run_id = n;
            i++;
        } else if (strcmp(a, "--target") == 0 && v) {
            const char *eq = strchr(v, '=');
            char name[32];
            px_kpi_measure m;
            if (!eq || (size_t)(eq - v) >= sizeof name)
                return px_cli_usage_error("kpi report", "--target '%s': use MEASURE=VALUE", v);
            memcpy(name, v, (size_t)(eq - v));
            name[eq - v] = 0;
            if (px_kpi_measure_parse(name, &m) != 0 || parse_double(eq + 1, 0, 1e12, &d) != 0 ||
                ((m == PX_KPI_READMISSION || m == PX_KPI_MORTALITY) && d > 1))
                return px_cli_usage_error("kpi report",
                                          "--target '%s': MEASURE is volume, readmission, mortality, los or cost;"
                                          " rates are proportions (0.15)", v);
            p.target[m] = d;
            i++;
        } else if (strcmp(a, "--targets") == 0 && v) {
            p.targets_path = v;
            i++;
        } else if (strcmp(a, "--benchmarks") == 0 && v) {
            p.benchmarks_dir = v;
            i++;
        } else if (strcmp(a, "--dp-epsilon") == 0 && v) {
            if (parse_double(v, 1e-6, 1e6, &d) != 0)
                return px_cli_usage_error("kpi report", "--dp-epsilon '%s': a positive privacy budget", v);
            p.dp_epsilon = d;
            i++;
        } else if (strcmp(a, "--dp-seed") == 0 && v) {
            uint64_t s;
            if (px_cli_u64(v, &s) != 0)
                return px_cli_usage_error("kpi report", "--dp-seed '%s': an unsigned integer", v);
            p.dp_seed = s;
            seed_given = 1;
            i++;
        } else {
            return px_cli_usage_error("kpi report", "unknown or incomplete option '%s'", a);
        }
    }
    if (!p.period) return px_cli_usage_error("kpi report", "--period is required");
    if (!period_syntax_ok(p.period))
        return px_cli_usage_error("kpi report", "'%s' is not a period: use 2023, 2023-Q2, 2023-06, all, or "
                                  "month|quarter|year", p.period);
    if (!p.html_path && !p.json_path && !p.csv_path)
        return px_cli_usage_error("kpi report", "--out FILE.html (or --json / --csv) is required");
    if (seed_given && !(p.dp_epsilon > 0))
        return px_cli_usage_error("kpi report", "--dp-seed needs --dp-epsilon");
    px_err e = {0};
    PGconn *c = connect_db(&e);
    if (!c) return px_cli_fail(&e);
    px_kpi_report_info info;
    /* retention: a period inside a removed year is refused, not reported from old results */
    if (px_retention_check_period(c, p.period, &e) != 0) {
        PQfinish(c);
        return px_cli_fail(&e);
    }
    int rc = px_kpi_report(c, &p, &info, &e);
    PQfinish(c);
    if (rc == PX_EINVAL) {   /* a period that is not one, a bad targets or benchmarks file: the caller's mistake */
        px_err_print(&e);
        return PX_EXIT_USAGE;
    }
    if (rc != 0) return px_cli_fail(&e);
    printf("kpi report: period %s (%s) of run %lld: %d facilities, %d cells flagged worse, %d better, %d suppressed",
           info.period, info.period_kind, info.run_id, info.units, info.flagged_worse, info.flagged_better,
           info.suppressed);
    if (p.dp_epsilon > 0) printf(", differentially private (epsilon %g per count)", p.dp_epsilon);
    printf("\n");
    if (p.html_path) printf("  html: %s\n", p.html_path);
    if (p.json_path) printf("  json: %s\n", p.json_path);
    if (p.csv_path) printf("  csv:  %s\n", p.csv_path);
    return PX_EXIT_OK;
}

int cmd_kpi(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return PX_EXIT_USAGE;
    }
    if (px_cli_wants_help(argc, argv) || strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    if (strcmp(argv[1], "compute") == 0) return kpi_compute(argc - 1, argv + 1);
    if (strcmp(argv[1], "report") == 0) return kpi_report(argc - 1, argv + 1);
    return px_cli_usage_error("kpi", "'%s' is not a kpi command (compute, report)", argv[1]);
}
