/* cmd_registry.c: prognos registry list|show|promote|verify|card|sql. Parses its own
 * options and calls registry/; every artifact it shows or promotes has passed
 * the signature and digest checks first. */
#include "engine/cli/cli.h"
#include "registry/registry.h"
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: prognos registry list [--json]\n"
    "       prognos registry show NAME [REF] [--json]\n"
    "       prognos registry promote NAME REF [--alias champion|challenger] [--reason TEXT]\n"
    "                                [--accept-failed-gates]\n"
    "       prognos registry verify [NAME [REF] | NAME --all | --all] [--json]\n"
    "       prognos registry card NAME [REF] [--out FILE.md]\n"
    "       prognos registry sql NAME[@REF] [REF]\n"
    "\n"
    "The versioned model registry. Versions are registered by 'prognos train' and\n"
    "'prognos retrain'; their artifacts live in $PROGNOS_HOME/registry/NAME/VERSION/,\n"
    "listed with their SHA-256 in manifest.json and signed with the installation's\n"
    "Ed25519 key ($PROGNOS_HOME/signing.key; signing.pub verifies).\n"
    "\n"
    "subcommands:\n"
    "  list      every model and version with its aliases and holdout headline metric\n"
    "  show      one version: its record, metrics, coefficients, reference\n"
    "            distributions, alias history and retraining decisions\n"
    "  promote   point an alias (default champion) at a version, after verifying it;\n"
    "            recorded in registry.alias_history and audit.events\n"
    "  verify    check a version's signature, every file's size and SHA-256, and the\n"
    "            digests recorded in the database; --all: every version of NAME, or\n"
    "            of every model without NAME\n"
    "  card      a model card in Markdown (intended use, cohort, features, metrics,\n"
    "            calibration, subgroups, coefficients, limitations, training data)\n"
    "  sql       a logit or poisson version compiled to SQL (its encoding, clamps,\n"
    "            inverse link and bounds, constants exact): CREATE SCHEMA IF NOT\n"
    "            EXISTS scores; and an IMMUTABLE function scores.NAME_vN(inputs...)\n"
    "            taking the model's inputs in order (float8, or text for categorical\n"
    "            ones) and returning the same value as prognos; pipe it into psql\n"
    "            and score any table in place. SVMs do not compile (exit 1)\n"
    "\n"
    "REF: a version (3 or v3), champion, challenger or latest; default: the champion,\n"
    "else the latest version.\n"
    "\n"
    "options:\n"
    "  --json          machine-readable output (list, show, verify)\n"
    "  --alias A       promote: champion (default) or challenger\n"
    "  --reason TEXT   promote: why, kept in the alias history\n"
    "  --accept-failed-gates  promote: a version that failed its quality gates may\n"
    "                  become champion (recorded in registry.decisions); without it\n"
    "                  such a promotion to champion is refused (exit 1)\n"
    "  --all           verify: every version\n"
    "  --out FILE      card: write the card to FILE (atomically) instead of stdout\n"
    "  -h, --help      show this help\n"
    "\n"
    "Exit codes: 0 ok; 1 failed (verify: any version failed its check, and the\n"
    "message names the model, version and file); 2 usage error; 3 nothing to do\n"
    "(promote: the alias already points there).\n";

typedef struct opts {
    const char *pos[3];
    int npos;
    int json, all, accept;
    const char *alias, *reason, *out;
} opts;

static int parse(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) o->json = 1;
        else if (strcmp(a, "--all") == 0) o->all = 1;
        else if (strcmp(a, "--accept-failed-gates") == 0) o->accept = 1;
        else if (strcmp(a, "--alias") == 0 || strcmp(a, "--reason") == 0 || strcmp(a, "--out") == 0) {
            if (i + 1 >= argc) return px_cli_usage_error("registry", "%s needs a value", a);
            const char **dst = a[2] == 'a' ? &o->alias : a[2] == 'r' ? &o->reason : &o->out;
            *dst = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return px_cli_usage_error("registry", "unknown option '%s'", a);
        } else if (o->npos < 3) {
            o->pos[o->npos++] = a;
        } else {
            return px_cli_usage_error("registry", "unexpected argument '%s'", a);
        }
    }
    return 0;
}

/* Only the options a subcommand takes, and at most max positional arguments. */
static int check(const char *sub, const opts *o, int minpos, int maxpos, int json, int all, int promote, int out)
{
    if (o->npos < minpos) return px_cli_usage_error("registry", "%s needs %s", sub, minpos == 1 ? "NAME" : "NAME and REF");
    if (o->npos > maxpos) return px_cli_usage_error("registry", "unexpected argument '%s'", o->pos[maxpos]);
    if (o->json && !json) return px_cli_usage_error("registry", "%s has no --json", sub);
    if (o->all && !all) return px_cli_usage_error("registry", "--all is for verify");
    if ((o->alias || o->reason || o->accept) && !promote)
        return px_cli_usage_error("registry", "--alias, --reason and --accept-failed-gates are for promote");
    if (o->out && !out) return px_cli_usage_error("registry", "--out is for card");
    return 0;
}

static int do_verify(PGconn *c, const px_config *cfg, const opts *o)
{
    px_err e = {0};
    int failed = 0, n = 0;
    if (o->all && o->npos == 2) return px_cli_usage_error("registry", "verify takes REF or --all, not both");
    if (!o->all && o->npos == 0) return px_cli_usage_error("registry", "verify needs NAME, or --all");
    /* the versions to check */
    int nv = 0;
    char (*names)[64] = NULL;
    int *versions = NULL;
    if (o->all) {
        px_reg_version_brief *all = NULL;
        size_t nall = 0;
        if (px_reg_versions(c, o->npos ? o->pos[0] : NULL, &all, &nall, &e) != 0) return px_cli_fail(&e);
        nv = (int)nall;
        if (nv == 0 && o->npos) {
            px_reg_briefs_free(all, nall);
            px_err_set(&e, PX_ENOTFOUND, "no model named '%s' in the registry", o->pos[0]);
            return px_cli_fail(&e);
        }
        names = calloc((size_t)nv + 1, sizeof *names);
        versions = calloc((size_t)nv + 1, sizeof *versions);
        if (!names || !versions) {
            px_reg_briefs_free(all, nall);
            free(names);
            free(versions);
            fprintf(stderr, "prognos: error: out of memory\n");
            return PX_EXIT_FAIL;
        }
        for (int i = 0; i < nv; i++) {
            snprintf(names[i], sizeof names[i], "%s", all[i].name);
            versions[i] = all[i].version;
        }
        px_reg_briefs_free(all, nall);
    } else {
        names = calloc(1, sizeof *names);
        versions = calloc(1, sizeof *versions);
        if (!names || !versions) {
            free(names);
            free(versions);
            fprintf(stderr, "prognos: error: out of memory\n");
            return PX_EXIT_FAIL;
        }
        if (px_reg_resolve(c, o->pos[0], o->npos > 1 ? o->pos[1] : NULL, &versions[0], &e) != 0) {
            free(names);
            free(versions);
            return px_cli_fail(&e);
        }
        snprintf(names[0], sizeof names[0], "%s", o->pos[0]);
        nv = 1;
    }
    if (o->json) printf("{\"results\":[");
    for (int i = 0; i < nv; i++) {
        px_err_clear(&e);
        int rc = px_reg_verify(c, cfg, names[i], versions[i], &e);
        n++;
        if (rc != 0) failed++;
        if (o->json) {
            px_buf b = {0};
            px_buf_printf(&b, "%s{\"name\":\"%s\",\"version\":%d,\"ok\":%s", i ? "," : "", names[i], versions[i],
                          rc == 0 ? "true" : "false");
            if (rc != 0) {
                px_buf_adds(&b, ",\"error\":");
                px_buf_json_str(&b, e.msg, strlen(e.msg));
                if (e.detail[0]) {
                    px_buf_adds(&b, ",\"detail\":");
                    px_buf_json_str(&b, e.detail, strlen(e.detail));
                }
            }
            px_buf_addc(&b, '}');
            if (b.data) fputs(b.data, stdout);
            px_buf_release(&b);
        } else if (rc == 0) {
            printf("ok      %s v%d\n", names[i], versions[i]);
        } else {
            printf("FAILED  %s v%d\n", names[i], versions[i]);
            px_err_print(&e);
        }
    }
    if (o->json) printf("],\"checked\":%d,\"failed\":%d}\n", n, failed);
    else if (nv == 0) printf("no versions registered\n");
    else if (nv > 1) printf("%d version%s checked, %d failed\n", n, n == 1 ? "" : "s", failed);
    free(names);
    free(versions);
    if (fflush(stdout) != 0) return PX_EXIT_FAIL;
    return failed ? PX_EXIT_FAIL : PX_EXIT_OK;
}

static int do_promote(PGconn *c, const px_config *cfg, const opts *o)
{
    px_err e = {0};
    int version = 0;
    const char *alias = o->alias ? o->alias : "champion";
    if (strcmp(alias, "champion") != 0 && strcmp(alias, "challenger") != 0)
        return px_cli_usage_error("registry", "--alias must be champion or challenger, not '%s'", alias);
    if (px_reg_resolve(c, o->pos[0], o->pos[1], &version, &e) != 0) return px_cli_fail(&e);
    /* a champion must have passed its quality gates, or the failure be accepted */
    int passed = 1, accepted = 0;
    char failed[256] = "";
    if (strcmp(alias, "champion") == 0) {
        if (px_reg_gates_status(c, o->pos[0], version, &passed, &accepted, failed, sizeof failed, &e) != 0)
            return px_cli_fail(&e);
        if (!passed && !accepted && !o->accept) {
            px_err_set(&e, PX_EINVAL, "cannot promote model '%s' v%d to champion: it failed its quality gates (%s)",
                       o->pos[0], version, failed);
            px_err_hint(&e, "see prognos registry show %s %d; promote anyway with --accept-failed-gates", o->pos[0],
                        version);
            return px_cli_fail(&e);
        }
        if (!passed && !accepted &&
            px_reg_accept_gates(c, o->pos[0], version, o->reason ? o->reason : "prognos registry promote", &e) != 0)
            return px_cli_fail(&e);
    }
    int rc = px_reg_promote(c, cfg, o->pos[0], version, alias, o->reason, &e);
    if (rc != 0) return px_cli_fail(&e);
    printf("model '%s' %s is now v%d\n", o->pos[0], alias, version);
    return PX_EXIT_OK;
}

/* registry sql: the version as an SQL function (models/sql.c). */
static int do_sql(PGconn *c, const px_config *cfg, const opts *o)
{
    px_err e = {0};
    char name[128], ref[64];
    const char *at = strchr(o->pos[0], '@');
    snprintf(name, sizeof name, "%.*s", at ? (int)(at - o->pos[0]) : (int)strlen(o->pos[0]), o->pos[0]);
    snprintf(ref, sizeof ref, "%s", at ? at + 1 : o->npos > 1 ? o->pos[1] : "champion");
    if (at && o->npos > 1) return px_cli_usage_error("registry", "sql: give the version as NAME@REF or NAME REF, not both");
    int version = 0;
    px_models_init();
    px_model *m = px_reg_load(c, cfg, name, ref, &version, &e);
    if (!m) return px_cli_fail(&e);
    char fname[300];
    char *q = PQescapeIdentifier(c, name, strlen(name)), *qv = NULL;
    char vn[160];
    snprintf(vn, sizeof vn, "%s_v%d", name, version);
    qv = PQescapeIdentifier(c, vn, strlen(vn));
    snprintf(fname, sizeof fname, "scores.%s", qv ? qv : "");
    px_buf b = {0};
    int rc = q && qv ? px_model_sql_function(m, fname, &b, &e) : px_err_set(&e, PX_ENOMEM, "out of memory");
    PQfreemem(q);
    PQfreemem(qv);
    px_model_free(m);
    if (rc != 0) {
        px_buf_release(&b);
        return px_cli_fail(&e);
    }
    printf("-- %s v%d compiled to SQL by prognos: equals px_model_predict to rounding\n"
           "CREATE SCHEMA IF NOT EXISTS scores;\n%s", name, version, b.data);
    px_buf_release(&b);
    return fflush(stdout) == 0 ? PX_EXIT_OK : PX_EXIT_FAIL;
}

static int do_card(PGconn *c, const px_config *cfg, const opts *o)
{
    px_err e = {0};
    if (!o->out) {
        if (px_reg_card(c, cfg, o->pos[0], o->npos > 1 ? o->pos[1] : NULL, stdout, &e) != 0) return px_cli_fail(&e);
        return PX_EXIT_OK;
    }
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    if (!f) {
        fprintf(stderr, "prognos: error: out of memory\n");
        return PX_EXIT_FAIL;
    }
    int rc = px_reg_card(c, cfg, o->pos[0], o->npos > 1 ? o->pos[1] : NULL, f, &e);
    fclose(f);
    if (rc == 0) rc = px_file_write_atomic(o->out, mem, len, 0644, &e);
    free(mem);
    if (rc != 0) return px_cli_fail(&e);
    printf("wrote %s\n", o->out);
    return PX_EXIT_OK;
}

int cmd_registry(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? PX_EXIT_USAGE : PX_EXIT_OK;
    }
    if (px_cli_wants_help(argc, argv)) {
        fputs(usage, stdout);
        return PX_EXIT_OK;
    }
    const char *sub = argv[1];
    opts o;
    int rc = parse(argc, argv, &o);
    if (rc != 0) return rc;
    if (strcmp(sub, "list") == 0) rc = check(sub, &o, 0, 0, 1, 0, 0, 0);
    else if (strcmp(sub, "show") == 0) rc = check(sub, &o, 1, 2, 1, 0, 0, 0);
    else if (strcmp(sub, "promote") == 0) rc = check(sub, &o, 2, 2, 0, 0, 1, 0);
    else if (strcmp(sub, "verify") == 0) rc = check(sub, &o, 0, 2, 1, 1, 0, 0);
    else if (strcmp(sub, "card") == 0) rc = check(sub, &o, 1, 2, 0, 0, 0, 1);
    else if (strcmp(sub, "sql") == 0) rc = check(sub, &o, 1, 2, 0, 0, 0, 0);
    else return px_cli_usage_error("registry", "unknown subcommand '%s'", sub);
    if (rc != 0) return rc;

    px_config cfg;
    px_err e = {0};
    if (px_config_load(&cfg, &e) != 0) return px_cli_fail(&e);
    /* the registry lives in a warehouse: none here is an error, never a new one */
    if (px_db_require(&cfg, &e) != 0) return px_cli_fail(&e);
    px_log_open(cfg.home);
    PGconn *c = px_db_connect(&cfg, &e);
    if (!c) return px_cli_fail(&e);
    if (strcmp(sub, "list") == 0) {
        rc = px_reg_list(c, o.json, stdout, &e) == 0 ? PX_EXIT_OK : px_cli_fail(&e);
    } else if (strcmp(sub, "show") == 0) {
        rc = px_reg_show(c, &cfg, o.pos[0], o.npos > 1 ? o.pos[1] : NULL, o.json, stdout, &e) == 0 ? PX_EXIT_OK
                                                                                                     : px_cli_fail(&e);
    } else if (strcmp(sub, "promote") == 0) {
        rc = do_promote(c, &cfg, &o);
    } else if (strcmp(sub, "verify") == 0) {
        rc = do_verify(c, &cfg, &o);
    } else if (strcmp(sub, "sql") == 0) {
        rc = do_sql(c, &cfg, &o);
    } else {
        rc = do_card(c, &cfg, &o);
    }
    PQfinish(c);
    return rc;
}
