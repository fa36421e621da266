/* report.c: what the registry tells people: the list of models and versions,
 * one version in detail (text or JSON), and the Markdown model card. Every
 * artifact shown is read through the signed manifest (nothing unverified is
 * displayed); the row's own fields come from registry.versions. Reports are
 * built in memory and written in one go, so a failure prints nothing partial. */
#include "registry/internal.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------------ */

static int emit(px_buf *b, FILE *out, px_err *e)
{
    if (b->len && fwrite(b->data, 1, b->len, out) != b->len) return px_err_set(e, PX_EIO, "cannot write the report");
    if (fflush(out) != 0) return px_err_set(e, PX_EIO, "cannot write the report");
    return 0;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* A number with the given precision, or "-" when absent. */
static const char *num(char *buf, size_t n, double v, int digits)
{
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, "%.*f", digits, v);
    return buf;
}

/* Whole numbers (counts) without decimals. */
static const char *count(char *buf, size_t n, double v)
{
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, "%.0f", v);
    return buf;
}

/* "0.712 (95% CI 0.690-0.734)", or just the AUC when no interval was recorded. */
static const char *auc_ci(char *buf, size_t n, const cJSON *ev, const char *ci_word)
{
    double a = jnum(ev, "auc"), lo = jnum(ev, "auc_lo"), hi = jnum(ev, "auc_hi");
    if (isnan(a)) snprintf(buf, n, "-");
    else if (isnan(lo) || isnan(hi)) snprintf(buf, n, "%.3f", a);
    else snprintf(buf, n, "%.3f (%s%.3f-%.3f)", a, ci_word, lo, hi);
    return buf;
}

/* Markdown table cell: '|' escaped, line breaks as spaces. */
static void md_cell(px_buf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '|') px_buf_adds(b, "\\|");
        else if (*p == '\n' || *p == '\r') px_buf_addc(b, ' ');
        else px_buf_addc(b, *p);
    }
}

/* Parses a verified JSON artifact; NULL with e set (PX_ENOTFOUND when not listed). */
static cJSON *read_json(const reg_manifest *m, const char *dir, const char *file, px_err *e)
{
    unsigned char *d = NULL;
    size_t n = 0;
    if (reg_manifest_read(m, dir, file, &d, &n, e) != 0) return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)d, n);
    free(d);
    if (!j) px_err_set(e, PX_ECORRUPT, "%s: %s is not JSON", m->ctx, file);
    return j;
}

/* Reads a verified CSV artifact into rows of fields (no quoting beyond RFC 4180's
 * double quotes). Returns the number of rows (header included), or -1 with e set;
 * 0 when the manifest does not list the file. Caller frees with csv_free. */
typedef struct csv_rows { size_t n, cap; char ***row; size_t *ncol; } csv_rows;

static void csv_free(csv_rows *t)
{
    for (size_t i = 0; i < t->n; i++) {
        for (size_t j = 0; j < t->ncol[i]; j++) free(t->row[i][j]);
        free(t->row[i]);
    }
    free(t->row);
    free(t->ncol);
    memset(t, 0, sizeof *t);
}

#define CSV_MAX_COLS 64

static int csv_parse(const char *s, size_t len, csv_rows *t)
{
    size_t i = 0;
    memset(t, 0, sizeof *t);
    while (i < len) {
        char *fields[CSV_MAX_COLS];
        size_t nf = 0;
        int oom = 0;
        for (;;) {
            px_buf f = {0};
            if (i < len && s[i] == '"') {
                i++;
                while (i < len && !(s[i] == '"' && (i + 1 >= len || s[i + 1] != '"'))) {
                    if (s[i] == '"') i++;
                    px_buf_addc(&f, s[i++]);
                }
                i++;
            }
            while (i < len && s[i] != ',' && s[i] != '\n' && s[i] != '\r') px_buf_addc(&f, s[i++]);
            px_buf_addc(&f, '\0');
            if (!f.data) oom = 1;
            if (nf < CSV_MAX_COLS) fields[nf++] = f.data; /* further columns are dropped */
            else px_buf_release(&f);
            if (i < len && s[i] == ',') {
                i++;
                continue;
            }
            while (i < len && (s[i] == '\r' || s[i] == '\n')) i++;
            break;
        }
        if (!oom && t->n == t->cap) {
            size_t cap = t->cap ? 2 * t->cap : 16;
            char ***r = malloc(cap * sizeof *r);
            size_t *nc = malloc(cap * sizeof *nc);
            if (r && nc) {
                if (t->n) {
                    memcpy(r, t->row, t->n * sizeof *r);
                    memcpy(nc, t->ncol, t->n * sizeof *nc);
                }
                free(t->row);
                free(t->ncol);
                t->row = r;
                t->ncol = nc;
                t->cap = cap;
            } else {
                free(r);
                free(nc);
                oom = 1;
            }
        }
        char **row = oom ? NULL : malloc(nf * sizeof *row);
        if (!row) {
            for (size_t k = 0; k < nf; k++) free(fields[k]);
            csv_free(t);
            return -1;
        }
        memcpy(row, fields, nf * sizeof *row);
        t->row[t->n] = row;
        t->ncol[t->n++] = nf;
    }
    return (int)t->n;
}

static int read_csv(const reg_manifest *m, const char *dir, const char *file, csv_rows *t, px_err *e)
{
    unsigned char *d = NULL;
    size_t n = 0;
    memset(t, 0, sizeof *t);
    int rc = reg_manifest_read(m, dir, file, &d, &n, e);
    if (rc == PX_ENOTFOUND) return 0;
    if (rc != 0) return -1;
    rc = csv_parse((const char *)d, n, t);
    free(d);
    if (rc < 0) px_err_set(e, PX_ENOMEM, "out of memory");
    return rc;
}

/* ---- list ------------------------------------------------------------------------ */

/* Headline metrics straight from the row's metrics->overall (key names as written
 * by px_eval_bin_json / px_eval_reg_json). */
#define HEADLINE_SQL                                                                                            \
    "jsonb_strip_nulls(jsonb_build_object('n', m->'n', 'events', m->'events', 'auc', m->'auc', 'auc_lo',"      \
    " m->'auc_lo', 'auc_hi', m->'auc_hi', 'brier', m->'brier', 'cal_slope', m->'cal_slope', 'mae', m->'mae',"  \
    " 'rmse', m->'rmse', 'r2', m->'r2'))"

int px_reg_list(PGconn *c, int json, FILE *out, px_err *e)
{
    PGresult *r = NULL;
    px_buf b = {0};
    int rc = px_db_query(
        c, e, "cannot read the registry", &r,
        "SELECT v.name, v.version, v.algo, v.task,"
        " to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), v.created_by,"
        " coalesce((SELECT string_agg(a.alias, ',' ORDER BY a.alias) FROM registry.aliases a"
        "   WHERE a.name = v.name AND a.version = v.version), ''),"
        " " HEADLINE_SQL "::text, v.fingerprint, v.feature_table, v.label"
        " FROM registry.versions v, LATERAL (SELECT v.metrics->'overall' AS m) o"
        " ORDER BY v.name, v.version",
        0, NULL);
    if (rc != 0) return rc;
    int nr = PQntuples(r);
    if (json) {
        cJSON *root = cJSON_CreateObject(), *models = cJSON_AddArrayToObject(root, "models");
        cJSON *cur = NULL, *versions = NULL;
        const char *curname = "";
        for (int i = 0; models && i < nr; i++) {
            const char *name = PQgetvalue(r, i, 0);
            if (strcmp(name, curname) != 0) {
                cur = cJSON_CreateObject();
                cJSON_AddItemToArray(models, cur);
                cJSON_AddStringToObject(cur, "name", name);
                cJSON_AddItemToObject(cur, "aliases", cJSON_CreateObject());
                versions = cJSON_AddArrayToObject(cur, "versions");
                curname = name;
            }
            cJSON *v = cJSON_CreateObject();
            cJSON_AddItemToArray(versions, v);
            int ver = atoi(PQgetvalue(r, i, 1));
            cJSON_AddNumberToObject(v, "version", ver);
            cJSON_AddStringToObject(v, "algo", PQgetvalue(r, i, 2));
            cJSON_AddStringToObject(v, "task", PQgetvalue(r, i, 3));
            cJSON_AddStringToObject(v, "created_at", PQgetvalue(r, i, 4));
            cJSON_AddStringToObject(v, "created_by", PQgetvalue(r, i, 5));
            cJSON *al = cJSON_AddArrayToObject(v, "aliases");
            char aliases[64];
            snprintf(aliases, sizeof aliases, "%s", PQgetvalue(r, i, 6));
            for (char *tok = strtok(aliases, ","); tok; tok = strtok(NULL, ",")) {
                cJSON_AddItemToArray(al, cJSON_CreateString(tok));
                cJSON_AddNumberToObject(cJSON_GetObjectItemCaseSensitive(cur, "aliases"), tok, ver);
            }
            cJSON_AddItemToObject(v, "metrics", cJSON_Parse(PQgetvalue(r, i, 7)));
            cJSON_AddStringToObject(v, "fingerprint", PQgetvalue(r, i, 8));
            cJSON_AddStringToObject(v, "feature_table", PQgetvalue(r, i, 9));
            cJSON_AddStringToObject(v, "label", PQgetvalue(r, i, 10));
        }
        char *text = models ? reg_json_print(root) : NULL;
        cJSON_Delete(root);
        if (!text) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto done;
        }
        px_buf_adds(&b, text);
        free(text);
    } else if (nr == 0) {
        px_buf_adds(&b, "no models registered\n");
    } else {
        px_buf_printf(&b, "%-16s %-8s %-8s %-11s %-20s %-36s %s\n", "MODEL", "VERSION", "ALGO", "TASK", "ALIASES",
                      "HOLDOUT", "CREATED");
        for (int i = 0; i < nr; i++) {
            cJSON *m = cJSON_Parse(PQgetvalue(r, i, 7));
            char head[160], a[32], lo[32], ver[16];
            char auc[96];
            if (strcmp(PQgetvalue(r, i, 3), "binary") == 0)
                snprintf(head, sizeof head, "AUC %s", auc_ci(auc, sizeof auc, m, ""));
            else
                snprintf(head, sizeof head, "RMSE %s, R2 %s", num(a, sizeof a, jnum(m, "rmse"), 3),
                         num(lo, sizeof lo, jnum(m, "r2"), 3));
            cJSON_Delete(m);
            snprintf(ver, sizeof ver, "v%s", PQgetvalue(r, i, 1));
            px_buf_printf(&b, "%-16s %-8s %-8s %-11s %-20s %-36s %s\n", PQgetvalue(r, i, 0), ver, PQgetvalue(r, i, 2),
                          PQgetvalue(r, i, 3), *PQgetvalue(r, i, 6) ? PQgetvalue(r, i, 6) : "-", head,
                          PQgetvalue(r, i, 4));
        }
    }
    rc = b.data ? emit(&b, out, e) : px_err_set(e, PX_ENOMEM, "out of memory");
done:
    PQclear(r);
    px_buf_release(&b);
    return rc;
}

/* ---- one version ------------------------------------------------------------------ */

/* Everything show and card need about one version, verified. */
typedef struct version_info {
    char dir[4200];
    reg_manifest m;
    cJSON *row;       /* the registry.versions row as JSON (+ aliases, alias_history, decisions) */
    cJSON *metrics;   /* metrics.json */
    cJSON *ref;       /* reference.json */
    csv_rows coef;    /* coefficients.csv (n = 0 when none) */
    csv_rows calib;   /* calibration.csv (n = 0 when none) */
} version_info;

static void info_release(version_info *vi)
{
    reg_manifest_release(&vi->m);
    cJSON_Delete(vi->row);
    cJSON_Delete(vi->metrics);
    cJSON_Delete(vi->ref);
    csv_free(&vi->coef);
    csv_free(&vi->calib);
}

static int info_load(PGconn *c, const px_config *cfg, const char *name, const char *ref, const char *verb,
                     version_info *vi, px_err *e)
{
    PGresult *r = NULL;
    int version = 0, rc;
    memset(vi, 0, sizeof *vi);
    if ((rc = px_reg_resolve(c, name, ref, &version, e)) != 0) return rc;
    if ((rc = reg_open_version(c, cfg, name, version, verb, vi->dir, sizeof vi->dir, &vi->m, e)) != 0) return rc;
    /* a report about a version must not vouch for one whose model.bin is damaged */
    if ((rc = reg_manifest_check_all(&vi->m, vi->dir, NULL, e)) != 0) {
        reg_manifest_release(&vi->m);
        return rc;
    }
    char vs[16];
    snprintf(vs, sizeof vs, "%d", version);
    const char *p[2] = {name, vs};
    rc = px_db_query(
        c, e, "cannot read the registry", &r,
        "SELECT jsonb_build_object("
        " 'name', v.name, 'version', v.version, 'algo', v.algo, 'task', v.task, 'params', v.params,"
        " 'feature_set', v.feature_set, 'feature_table', v.feature_table, 'label', v.label,"
        " 'definition_hash', v.definition_hash, 'fingerprint', v.fingerprint, 'split', v.split,"
        " 'metrics', v.metrics, 'source_batches', v.source_batches, 'artifact_dir', v.artifact_dir,"
        " 'manifest_sha256', v.manifest_sha256, 'model_sha256', v.model_sha256,"
        " 'created_at', to_char(v.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " 'created_by', v.created_by,"
        " 'aliases', (SELECT coalesce(jsonb_agg(a.alias ORDER BY a.alias), '[]') FROM registry.aliases a"
        "   WHERE a.name = v.name AND a.version = v.version),"
        " 'model_aliases', (SELECT coalesce(jsonb_object_agg(a.alias, a.version), '{}') FROM registry.aliases a"
        "   WHERE a.name = v.name),"
        " 'alias_history', (SELECT coalesce(jsonb_agg(jsonb_build_object('alias', h.alias, 'from_version',"
        "   h.from_version, 'to_version', h.to_version, 'reason', h.reason, 'actor', h.actor, 'at',"
        "   to_char(h.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) ORDER BY h.history_id), '[]')"
        "   FROM registry.alias_history h WHERE h.name = v.name"
        "   AND (h.to_version = v.version OR h.from_version = v.version)),"
        " 'decisions', (SELECT coalesce(jsonb_agg(jsonb_build_object('decision_id', d.decision_id, 'at',"
        "   to_char(d.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'decision', d.decision,"
        "   'candidate_version', d.candidate_version, 'champion_version', d.champion_version, 'gates', d.gates,"
        "   'metrics', d.metrics, 'message', d.message) ORDER BY d.decision_id), '[]')"
        "   FROM registry.decisions d WHERE d.name = v.name"
        "   AND (d.candidate_version = v.version OR d.champion_version = v.version))"
        ")::text FROM registry.versions v WHERE v.name = $1 AND v.version = $2",
        2, p);
    if (rc != 0) goto fail;
    if (PQntuples(r) != 1 || !(vi->row = cJSON_Parse(PQgetvalue(r, 0, 0)))) {
        rc = px_err_set(e, PX_ENOTFOUND, "model '%s' has no version %d", name, version);
        goto fail;
    }
    PQclear(r);
    r = NULL;
    if (!(vi->metrics = read_json(&vi->m, vi->dir, "metrics.json", e))) {
        rc = e ? e->code : PX_ECORRUPT;
        goto fail;
    }
    if (!(vi->ref = read_json(&vi->m, vi->dir, "reference.json", e))) {
        rc = e ? e->code : PX_ECORRUPT;
        goto fail;
    }
    if (read_csv(&vi->m, vi->dir, "coefficients.csv", &vi->coef, e) < 0 ||
        read_csv(&vi->m, vi->dir, "calibration.csv", &vi->calib, e) < 0) {
        rc = e ? e->code : PX_ECORRUPT;
        goto fail;
    }
    return 0;
fail:
    PQclear(r);
    info_release(vi);
    return rc ? rc : PX_ECORRUPT;
}

/* One evaluation as a text line. */
static void eval_line(px_buf *b, const cJSON *ev, int binary)
{
    char s1[32], s2[32], s3[96], s4[32], s6[32], s7[32];
    if (binary)
        px_buf_printf(b, "n %s, events %s, AUC %s, Brier %s, calibration slope %s\n",
                      count(s1, sizeof s1, jnum(ev, "n")), count(s2, sizeof s2, jnum(ev, "events")),
                      auc_ci(s3, sizeof s3, ev, "95% CI "), num(s6, sizeof s6, jnum(ev, "brier"), 4),
                      num(s7, sizeof s7, jnum(ev, "cal_slope"), 2));
    else
        px_buf_printf(b, "n %s, MAE %s, RMSE %s, R2 %s\n", count(s1, sizeof s1, jnum(ev, "n")),
                      num(s2, sizeof s2, jnum(ev, "mae"), 3), num(s3, sizeof s3, jnum(ev, "rmse"), 3),
                      num(s4, sizeof s4, jnum(ev, "r2"), 3));
}

static char *compact(const cJSON *j)
{
    return j ? cJSON_PrintUnformatted(j) : NULL;
}

/* The quality gates' verdict (metrics.json "gates", written at registration) as
 * text (md 0) or Markdown (md 1). Versions from before the gates say so. */
static void gates_section(px_buf *b, const version_info *vi, int md)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(vi->metrics, "gates");
    if (!cJSON_IsObject(g)) {
        px_buf_adds(b, md ? "Not evaluated: this version was registered before quality gates existed.\n\n"
                          : "  not evaluated (registered before quality gates existed)\n");
        return;
    }
    int passed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "passed"));
    int accepted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "accepted"));
    const char *verdict = passed ? "PASSED" : accepted ? "FAILED, accepted with --accept-failed-gates"
                                                       : "FAILED: this version may not be champion, serve predictions "
                                                         "or adjust KPIs";
    if (md) px_buf_printf(b, "**%s**\n\n| gate | result | detail | what would fix it |\n|---|---|---|---|\n", verdict);
    else px_buf_printf(b, "  %s\n", verdict);
    const cJSON *checks = cJSON_GetObjectItemCaseSensitive(g, "checks");
    for (const cJSON *c = checks ? checks->child : NULL; c; c = c->next) {
        int ok = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "passed"));
        const char *fix = jstr(c, "fix");
        if (md) {
            px_buf_adds(b, "| ");
            md_cell(b, jstr(c, "gate"));
            px_buf_printf(b, " | %s | ", ok ? "passed" : "**failed**");
            md_cell(b, jstr(c, "why"));
            px_buf_adds(b, " | ");
            md_cell(b, ok ? "" : fix);
            px_buf_adds(b, " |\n");
        } else {
            px_buf_printf(b, "  %-22s %-6s %s%s%s\n", jstr(c, "gate"), ok ? "passed" : "FAILED", jstr(c, "why"),
                          ok ? "" : "; fix: ", ok ? "" : fix);
        }
    }
    if (md) px_buf_addc(b, '\n');
}

static void show_text(px_buf *b, const version_info *vi)
{
    const cJSON *row = vi->row;
    int binary = strcmp(jstr(row, "task"), "binary") == 0;
    char *params = compact(cJSON_GetObjectItemCaseSensitive(row, "params"));
    char *split = compact(cJSON_GetObjectItemCaseSensitive(row, "split"));
    char *batches = compact(cJSON_GetObjectItemCaseSensitive(row, "source_batches"));
    char *aliases = compact(cJSON_GetObjectItemCaseSensitive(row, "model_aliases"));
    px_buf_printf(b, "model %s v%d\n", jstr(row, "name"), (int)jnum(row, "version"));
    const cJSON *mine = cJSON_GetObjectItemCaseSensitive(row, "aliases");
    px_buf_adds(b, "  aliases          ");
    if (cJSON_GetArraySize(mine) == 0) px_buf_adds(b, "-");
    for (const cJSON *a = mine ? mine->child : NULL; a; a = a->next)
        px_buf_printf(b, "%s%s", a == mine->child ? "" : ", ", cJSON_IsString(a) ? a->valuestring : "");
    px_buf_printf(b, " (model: %s)\n", aliases ? aliases : "{}");
    px_buf_printf(b, "  algorithm        %s\n  task             %s\n", jstr(row, "algo"), jstr(row, "task"));
    px_buf_printf(b, "  feature set      %s\n  feature table    %s\n  label            %s\n",
                  *jstr(row, "feature_set") ? jstr(row, "feature_set") : "-", jstr(row, "feature_table"),
                  jstr(row, "label"));
    px_buf_printf(b, "  definition hash  %s\n  fingerprint      %s\n",
                  *jstr(row, "definition_hash") ? jstr(row, "definition_hash") : "-", jstr(row, "fingerprint"));
    px_buf_printf(b, "  params           %s\n  split            %s\n  source batches   %s\n", params ? params : "",
                  split ? split : "", batches ? batches : "");
    px_buf_printf(b, "  created          %s by %s\n  artifacts        %s\n", jstr(row, "created_at"),
                  jstr(row, "created_by"), jstr(row, "artifact_dir"));
    px_buf_printf(b, "  manifest sha256  %s\n  model sha256     %s\n", jstr(row, "manifest_sha256"),
                  jstr(row, "model_sha256"));
    free(params);
    free(split);
    free(batches);
    free(aliases);

    px_buf_adds(b, "\nquality gates\n");
    gates_section(b, vi, 0);
    px_buf_adds(b, "\nholdout metrics\n");
    const cJSON *overall = cJSON_GetObjectItemCaseSensitive(vi->metrics, "overall");
    if (overall) {
        px_buf_printf(b, "  %-20s ", "overall");
        eval_line(b, overall, binary);
    }
    static const char *const groups[] = {"by_sex", "by_age_band"};
    for (int g = 0; g < 2; g++) {
        const cJSON *grp = cJSON_GetObjectItemCaseSensitive(vi->metrics, groups[g]);
        for (const cJSON *s = grp ? grp->child : NULL; s; s = s->next) {
            char label[64];
            snprintf(label, sizeof label, "%s %s", groups[g] + 3, s->string ? s->string : "");
            px_buf_printf(b, "  %-20s ", label);
            eval_line(b, s, binary);
        }
    }
    if (!overall && !cJSON_GetObjectItemCaseSensitive(vi->metrics, "by_sex")) px_buf_adds(b, "  (none recorded)\n");

    px_buf_adds(b, "\ncoefficients (95% Wald intervals)\n");
    if (vi->coef.n <= 1) px_buf_adds(b, "  (none: the algorithm has no coefficients)\n");
    for (size_t i = 0; i < vi->coef.n; i++) {
        char **f = vi->coef.row[i];
        if (vi->coef.ncol[i] < 8) continue;
        if (i == 0)
            px_buf_printf(b, "  %-32s %10s %10s  %-23s %s\n", f[0], f[1], f[2], "95% CI", f[5]);
        else
            px_buf_printf(b, "  %-32s %10.4g %10.4g  [%9.4g, %9.4g]  %.4g\n", f[0], atof(f[1]), atof(f[2]),
                          atof(f[3]), atof(f[4]), atof(f[5]));
    }

    const cJSON *feats = cJSON_GetObjectItemCaseSensitive(vi->ref, "features");
    px_buf_printf(b, "\nreference distributions (training rows, n %.0f)\n", jnum(vi->ref, "n"));
    for (const cJSON *f = feats ? feats->child : NULL; f; f = f->next) {
        char s1[32], s2[32], s3[32], s4[32];
        px_buf_printf(b, "  %-24s %-12s missing %5.1f%%  ", jstr(f, "name"), jstr(f, "kind"),
                      100 * jnum(f, "missing_share"));
        if (strcmp(jstr(f, "kind"), "numeric") == 0) {
            px_buf_printf(b, "mean %s, range %s..%s, %d bins\n", num(s1, sizeof s1, jnum(f, "mean"), 3),
                          num(s2, sizeof s2, jnum(f, "min"), 3), num(s3, sizeof s3, jnum(f, "max"), 3),
                          cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(f, "counts")));
        } else {
            const cJSON *lv = cJSON_GetObjectItemCaseSensitive(f, "levels");
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(f, "shares");
            int nl = cJSON_GetArraySize(lv);
            for (int l = 0; l < nl && l < 6; l++) {
                const cJSON *name = cJSON_GetArrayItem(lv, l), *share = cJSON_GetArrayItem(sh, l);
                px_buf_printf(b, "%s%s %s%%", l ? ", " : "", cJSON_IsString(name) ? name->valuestring : "",
                              num(s4, sizeof s4, cJSON_IsNumber(share) ? 100 * share->valuedouble : NAN, 1));
            }
            px_buf_printf(b, "%s\n", nl > 6 ? ", ..." : "");
        }
    }
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(vi->ref, "score");
    if (score) {
        char s1[32], s2[32], s3[32];
        px_buf_printf(b, "  %-24s %-12s mean %s, range %s..%s\n", "(score)", "numeric",
                      num(s1, sizeof s1, jnum(score, "mean"), 4), num(s2, sizeof s2, jnum(score, "min"), 4),
                      num(s3, sizeof s3, jnum(score, "max"), 4));
    }

    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(row, "alias_history");
    px_buf_adds(b, "\nalias history\n");
    if (cJSON_GetArraySize(hist) == 0) px_buf_adds(b, "  (none)\n");
    for (const cJSON *h = hist ? hist->child : NULL; h; h = h->next) {
        char from[16];
        double fv = jnum(h, "from_version");
        if (isnan(fv)) snprintf(from, sizeof from, "-");
        else snprintf(from, sizeof from, "v%.0f", fv);
        px_buf_printf(b, "  %s  %-10s %s -> v%.0f  by %s: %s\n", jstr(h, "at"), jstr(h, "alias"), from,
                      jnum(h, "to_version"), jstr(h, "actor"), *jstr(h, "reason") ? jstr(h, "reason") : "-");
    }
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(row, "decisions");
    px_buf_adds(b, "\nretraining decisions\n");
    if (cJSON_GetArraySize(dec) == 0) px_buf_adds(b, "  (none)\n");
    for (const cJSON *d = dec ? dec->child : NULL; d; d = d->next) {
        char cand[16], champ[16];
        double cv = jnum(d, "candidate_version"), hv = jnum(d, "champion_version");
        if (isnan(cv)) snprintf(cand, sizeof cand, "-");
        else snprintf(cand, sizeof cand, "v%.0f", cv);
        if (isnan(hv)) snprintf(champ, sizeof champ, "-");
        else snprintf(champ, sizeof champ, "v%.0f", hv);
        px_buf_printf(b, "  %s  %-10s candidate %s, champion %s: %s\n", jstr(d, "at"), jstr(d, "decision"), cand,
                      champ, jstr(d, "message"));
    }
}

/* Coefficients CSV as JSON objects (numbers as numbers). */
static cJSON *coef_json(const csv_rows *t)
{
    cJSON *arr = cJSON_CreateArray();
    if (!arr || t->n == 0) return arr;
    for (size_t i = 1; i < t->n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        for (size_t j = 0; j < t->ncol[i] && j < t->ncol[0]; j++) {
            char *end;
            double v = strtod(t->row[i][j], &end);
            if (j > 0 && *t->row[i][j] && !*end) cJSON_AddNumberToObject(o, t->row[0][j], v);
            else cJSON_AddStringToObject(o, t->row[0][j], t->row[i][j]);
        }
    }
    return arr;
}

int px_reg_show(PGconn *c, const px_config *cfg, const char *name, const char *ref, int json, FILE *out, px_err *e)
{
    version_info vi;
    px_buf b = {0};
    int rc = info_load(c, cfg, name, ref, "cannot show", &vi, e);
    if (rc != 0) return rc;
    if (json) {
        cJSON *root = cJSON_Duplicate(vi.row, 1);
        if (root) {
            cJSON_ReplaceItemInObjectCaseSensitive(root, "metrics", cJSON_Duplicate(vi.metrics, 1));
            cJSON_AddItemToObject(root, "coefficients", coef_json(&vi.coef));
            cJSON_AddItemToObject(root, "reference", cJSON_Duplicate(vi.ref, 1));
            cJSON_AddItemToObject(root, "features",
                                  cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(vi.m.json, "features"), 1));
        }
        char *text = root ? reg_json_print(root) : NULL;
        cJSON_Delete(root);
        if (text) px_buf_adds(&b, text);
        free(text);
    } else {
        show_text(&b, &vi);
    }
    rc = b.data ? emit(&b, out, e) : px_err_set(e, PX_ENOMEM, "out of memory");
    px_buf_release(&b);
    info_release(&vi);
    return rc;
}

/* ---- model card ---------------------------------------------------------------------- */

/* What each built-in model is for; the cohort and label come from the feature set's doc. */
static const struct {
    const char *set, *use;
} intended[] = {
    {"readmission",
     "Estimates, at discharge, the probability that an adult inpatient stay is followed by a readmission "
     "(all-cause: planned readmissions are not removed) within 30 days. Intended uses: (1) decision support, to prioritise discharge planning and "
     "follow-up for patients at high risk; (2) risk adjustment, as the expected-count model behind the "
     "risk-standardized readmission KPIs. Not intended for denying care, for individual prognosis "
     "conversations without clinical judgement, or for populations unlike the training cohort."},
    {"mortality",
     "Estimates, at admission, the probability of death within 30 days of an inpatient admission. Intended "
     "uses: risk adjustment of mortality KPIs by hospital, department and month, and flagging high-risk "
     "admissions for review. Not a triage tool, and not for end-of-life decisions."},
    {"los",
     "Estimates, at admission, the expected length of stay in days of an inpatient stay. Intended uses: "
     "capacity planning, and the expected length of stay behind risk-adjusted LOS KPIs. It predicts a mean, "
     "not an individual's discharge date."},
};

static void md_eval_header(px_buf *b, int binary)
{
    if (binary)
        px_buf_adds(b, "| group | n | events | AUC (95% CI) | AUPRC | Brier | calibration intercept | "
                       "calibration slope | Hosmer-Lemeshow p |\n|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
    else
        px_buf_adds(b, "| group | n | mean observed | mean predicted | MAE | RMSE | R² |\n"
                       "|---|---:|---:|---:|---:|---:|---:|\n");
}

static void md_eval_row(px_buf *b, const char *group, const cJSON *ev, int binary)
{
    char s[10][32], auc[96];
    px_buf_adds(b, "| ");
    md_cell(b, group);
    if (binary)
        px_buf_printf(b, " | %s | %s | %s | %s | %s | %s | %s | %s |\n", count(s[0], 32, jnum(ev, "n")),
                      count(s[1], 32, jnum(ev, "events")), auc_ci(auc, sizeof auc, ev, ""),
                      num(s[5], 32, jnum(ev, "auprc"), 3), num(s[6], 32, jnum(ev, "brier"), 4),
                      num(s[7], 32, jnum(ev, "cal_intercept"), 3), num(s[8], 32, jnum(ev, "cal_slope"), 3),
                      num(s[9], 32, jnum(ev, "hl_p"), 3));
    else
        px_buf_printf(b, " | %s | %s | %s | %s | %s | %s |\n", count(s[0], 32, jnum(ev, "n")),
                      num(s[1], 32, jnum(ev, "mean_obs"), 3), num(s[2], 32, jnum(ev, "mean_pred"), 3),
                      num(s[3], 32, jnum(ev, "mae"), 3), num(s[4], 32, jnum(ev, "rmse"), 3),
                      num(s[5], 32, jnum(ev, "r2"), 3));
}

/* A table from a CSV (header row first). */
static void md_csv(px_buf *b, const csv_rows *t)
{
    for (size_t i = 0; i < t->n; i++) {
        px_buf_adds(b, "|");
        for (size_t j = 0; j < t->ncol[i]; j++) {
            px_buf_addc(b, ' ');
            md_cell(b, t->row[i][j]);
            px_buf_adds(b, " |");
        }
        px_buf_addc(b, '\n');
        if (i == 0) {
            px_buf_adds(b, "|");
            for (size_t j = 0; j < t->ncol[0]; j++) px_buf_adds(b, j ? "---:|" : "---|");
            px_buf_addc(b, '\n');
        }
    }
}

/* Coefficients rounded to 4 significant digits (coefficients.csv keeps 10). */
static void md_coef(px_buf *b, const csv_rows *t, int logit)
{
    px_buf_printf(b, "| term | estimate | SE | 95%% CI | %s (95%% CI) |\n|---|---:|---:|---:|---:|\n",
                  logit ? "odds ratio" : "rate ratio");
    for (size_t i = 1; i < t->n; i++) {
        char **f = t->row[i];
        if (t->ncol[i] < 8) continue;
        px_buf_adds(b, "| ");
        md_cell(b, f[0]);
        px_buf_printf(b, " | %.4g | %.4g | %.4g to %.4g | %.4g (%.4g to %.4g) |\n", atof(f[1]), atof(f[2]), atof(f[3]),
                      atof(f[4]), atof(f[5]), atof(f[6]), atof(f[7]));
    }
}

/* Calibration from the metrics' deciles of risk when there is no calibration.csv. */
static int md_groups(px_buf *b, const cJSON *overall)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(overall, "groups");
    if (!cJSON_IsArray(g) || cJSON_GetArraySize(g) == 0) return 0;
    px_buf_adds(b, "| decile of risk | n | events | mean predicted | observed rate |\n|---|---:|---:|---:|---:|\n");
    int i = 1;
    for (const cJSON *r = g->child; r; r = r->next, i++) {
        char s[4][32];
        px_buf_printf(b, "| %d | %s | %s | %s | %s |\n", i, count(s[0], 32, jnum(r, "n")),
                      count(s[1], 32, jnum(r, "events")), num(s[2], 32, jnum(r, "mean_pred"), 4),
                      num(s[3], 32, jnum(r, "obs_rate"), 4));
    }
    return 1;
}

static void card_features(px_buf *b, const version_info *vi)
{
    const cJSON *feats = cJSON_GetObjectItemCaseSensitive(vi->m.json, "features");
    const cJSON *rfeats = cJSON_GetObjectItemCaseSensitive(vi->ref, "features");
    px_buf_adds(b, "| feature | kind | training range or levels | mean (SD) | missing in training |\n"
                   "|---|---|---|---|---:|\n");
    for (const cJSON *f = feats ? feats->child : NULL; f; f = f->next) {
        const cJSON *rf = NULL;
        for (const cJSON *x = rfeats ? rfeats->child : NULL; x; x = x->next)
            if (strcmp(jstr(x, "name"), jstr(f, "name")) == 0) rf = x;
        char s[4][32];
        px_buf_adds(b, "| ");
        md_cell(b, jstr(f, "name"));
        px_buf_printf(b, " | %s%s | ", jstr(f, "kind"), cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(f, "dropped"))
                                                            ? " (constant in training: not used)"
                                                            : "");
        if (strcmp(jstr(f, "kind"), "numeric") == 0) {
            px_buf_printf(b, "%s to %s | %s (%s) | ", num(s[0], 32, jnum(f, "min"), 3), num(s[1], 32, jnum(f, "max"), 3),
                          num(s[2], 32, jnum(f, "mean"), 3), num(s[3], 32, jnum(f, "sd"), 3));
        } else {
            const cJSON *lv = cJSON_GetObjectItemCaseSensitive(f, "levels");
            int nl = cJSON_GetArraySize(lv), l = 0;
            for (const cJSON *x = lv ? lv->child : NULL; x && l < 12; x = x->next, l++) {
                if (l) px_buf_adds(b, ", ");
                md_cell(b, cJSON_IsString(x) ? x->valuestring : "");
            }
            if (nl > 12) px_buf_printf(b, ", ... (%d levels)", nl);
            px_buf_adds(b, " (reference: ");
            md_cell(b, jstr(f, "reference"));
            px_buf_adds(b, ") | - | ");
        }
        if (rf) px_buf_printf(b, "%.1f%% |\n", 100 * jnum(rf, "missing_share"));
        else px_buf_adds(b, "- |\n");
    }
}

/* Limitations that follow from this version's own numbers, then the standing ones. */
static void card_limitations(px_buf *b, const version_info *vi, int binary)
{
    const cJSON *overall = cJSON_GetObjectItemCaseSensitive(vi->metrics, "overall");
    if (binary && overall) {
        double lo = jnum(overall, "auc_lo"), hi = jnum(overall, "auc_hi"), slope = jnum(overall, "cal_slope");
        if (!isnan(lo) && !isnan(hi) && hi - lo > 0.1)
            px_buf_printf(b, "- The holdout AUC is imprecise (95%% CI %.3f-%.3f): the holdout is small or has few "
                             "events.\n", lo, hi);
        if (!isnan(slope) && (slope < 0.8 || slope > 1.2))
            px_buf_printf(b, "- Calibration slope %.2f on the holdout (ideal 1): predictions are %s; recalibrate "
                             "before using absolute risks.\n", slope, slope < 1 ? "too extreme (overfitting or drift)"
                                                                                   : "too moderate");
    }
    if (!binary && overall) {
        double r2 = jnum(overall, "r2");
        if (!isnan(r2) && r2 < 0.2)
            px_buf_printf(b, "- The model explains little of the variation in the outcome (holdout R² %.3f): use "
                             "it for averages over groups, not for individual stays.\n", r2);
    }
    static const char *const groups[] = {"by_sex", "by_age_band"};
    for (int g = 0; g < 2; g++) {
        const cJSON *grp = cJSON_GetObjectItemCaseSensitive(vi->metrics, groups[g]);
        for (const cJSON *s = grp ? grp->child : NULL; s; s = s->next) {
            double n = jnum(s, "n"), ev = jnum(s, "events");
            if ((!isnan(n) && n < 100) || (binary && !isnan(ev) && ev < 10)) {
                px_buf_printf(b, "- Subgroup %s = ", groups[g] + 3);
                md_cell(b, s->string ? s->string : "");
                px_buf_printf(b, " has only %.0f holdout rows%s: its metrics are imprecise.\n", n,
                              binary && !isnan(ev) ? (ev < 10 ? " and fewer than 10 events" : "") : "");
            }
        }
    }
    const char *algo = jstr(vi->row, "algo");
    if (strcmp(algo, "svc") == 0 || strcmp(algo, "svr") == 0)
        px_buf_adds(b, "- Support vector machines have no coefficients; per-feature explanations are the change in "
                       "the prediction when a feature is set to its training mean or reference level.\n");
    px_buf_adds(b,
                "- Validated only on a holdout of this installation's own data (later prediction times and patients "
                "not seen in training); performance in other hospitals or periods is unknown until checked there, "
                "and the drift monitor compares live inputs with the reference distributions recorded here.\n"
                "- Associations, not causes: coefficients describe the training data and must not be read as the "
                "effect of changing a feature.\n"
                "- Missing inputs are imputed with the training mean (numeric) or the reference level "
                "(categorical); inputs outside the training ranges above are extrapolations.\n"
                "- Subgroups other than sex and age band were not evaluated; check fairness for the populations "
                "where the model is used.\n");
}

int px_reg_card(PGconn *c, const px_config *cfg, const char *name, const char *ref, FILE *out, px_err *e)
{
    version_info vi;
    px_buf b = {0};
    int rc = info_load(c, cfg, name, ref, "cannot write the card of", &vi, e);
    if (rc != 0) return rc;
    const cJSON *row = vi.row;
    int binary = strcmp(jstr(row, "task"), "binary") == 0;
    int version = (int)jnum(row, "version");
    const char *set = jstr(row, "feature_set");
    const px_feat_set_info *fs = *set ? px_feat_set_find(set) : NULL;

    px_buf_printf(&b, "# Model card: %s v%d\n\n", name, version);
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(row, "aliases");
    px_buf_printf(&b, "| | |\n|---|---|\n| model | %s |\n| version | %d |\n| aliases | ", name, version);
    if (cJSON_GetArraySize(al) == 0) px_buf_adds(&b, "-");
    for (const cJSON *a = al ? al->child : NULL; a; a = a->next)
        px_buf_printf(&b, "%s%s", a == al->child ? "" : ", ", cJSON_IsString(a) ? a->valuestring : "");
    px_buf_printf(&b, " |\n| algorithm | %s |\n| task | %s |\n| label | %s |\n| feature table | %s |\n",
                  jstr(row, "algo"), binary ? "binary classification (probability)" : "regression (expected value)",
                  jstr(row, "label"), jstr(row, "feature_table"));
    px_buf_printf(&b, "| registered | %s by %s |\n\n", jstr(row, "created_at"), jstr(row, "created_by"));

    px_buf_adds(&b, "## Quality gates\n\n");
    gates_section(&b, &vi, 1);

    px_buf_adds(&b, "## Intended use\n\n");
    const char *use = NULL;
    for (size_t i = 0; fs && i < sizeof intended / sizeof intended[0]; i++)
        if (strcmp(intended[i].set, set) == 0) use = intended[i].use;
    if (use) px_buf_printf(&b, "%s\n\n", use);
    else
        px_buf_printf(&b, "A model of `%s` trained on the user table `%s`. Prognos does not know what it is for: "
                          "the team that registered it must state the intended use and population before it is "
                          "used for decisions.\n\n",
                      jstr(row, "label"), jstr(row, "feature_table"));

    px_buf_adds(&b, "## Cohort and label\n\n");
    if (fs && fs->doc) px_buf_printf(&b, "%s\n\n", fs->doc);
    else px_buf_printf(&b, "Rows of `%s`; label `%s`.\n\n", jstr(row, "feature_table"), jstr(row, "label"));
    const cJSON *split = cJSON_GetObjectItemCaseSensitive(row, "split");
    if (cJSON_GetArraySize(split) > 0) {
        px_buf_adds(&b, "Training and holdout split:\n\n");
        for (const cJSON *s = split->child; s; s = s->next) {
            char *v = cJSON_IsString(s) ? NULL : cJSON_PrintUnformatted(s);
            px_buf_printf(&b, "- %s: %s\n", s->string, v ? v : cJSON_IsString(s) ? s->valuestring : "");
            free(v);
        }
        px_buf_addc(&b, '\n');
    }

    px_buf_adds(&b, "## Features\n\n");
    card_features(&b, &vi);
    px_buf_addc(&b, '\n');

    px_buf_adds(&b, "## Holdout performance\n\n");
    const cJSON *overall = cJSON_GetObjectItemCaseSensitive(vi.metrics, "overall");
    if (overall) {
        if (binary)
            px_buf_adds(&b, "AUC with a 95% interval from DeLong's variance; Brier score; calibration intercept "
                            "and slope from a logistic recalibration of the predictions; Hosmer-Lemeshow over "
                            "deciles of risk.\n\n");
        md_eval_header(&b, binary);
        md_eval_row(&b, "overall", overall, binary);
        px_buf_addc(&b, '\n');
    } else {
        px_buf_adds(&b, "No holdout evaluation was recorded.\n\n");
    }

    if (binary) {
        px_buf_adds(&b, "## Calibration by decile of risk\n\n");
        if (vi.calib.n > 0) md_csv(&b, &vi.calib);
        else if (!md_groups(&b, overall)) px_buf_adds(&b, "No calibration table was recorded.");
        px_buf_addc(&b, '\n');
    }

    px_buf_adds(&b, "## Subgroups\n\n");
    static const char *const groups[] = {"by_sex", "by_age_band"};
    static const char *const titles[] = {"sex", "age band"};
    int any = 0;
    for (int g = 0; g < 2; g++) {
        const cJSON *grp = cJSON_GetObjectItemCaseSensitive(vi.metrics, groups[g]);
        if (!cJSON_IsObject(grp) || !grp->child) continue;
        px_buf_printf(&b, "By %s:\n\n", titles[g]);
        md_eval_header(&b, binary);
        for (const cJSON *s = grp->child; s; s = s->next) md_eval_row(&b, s->string ? s->string : "", s, binary);
        px_buf_addc(&b, '\n');
        any = 1;
    }
    if (!any) px_buf_adds(&b, "No subgroup metrics were recorded.\n\n");

    px_buf_adds(&b, "## Coefficients\n\n");
    if (vi.coef.n > 0) {
        px_buf_adds(&b, strcmp(jstr(row, "algo"), "logit") == 0
                            ? "Log-odds per unit of each feature on its original scale, with 95% Wald intervals "
                              "and odds ratios.\n\n"
                            : "Log of the ratio of means per unit of each feature, with 95% Wald intervals "
                              "(robust standard errors) and rate ratios.\n\n");
        md_coef(&b, &vi.coef, strcmp(jstr(row, "algo"), "logit") == 0);
    } else {
        px_buf_adds(&b, "This algorithm has no coefficients.\n");
    }
    px_buf_addc(&b, '\n');

    px_buf_adds(&b, "## Limitations\n\n");
    card_limitations(&b, &vi, binary);
    px_buf_addc(&b, '\n');

    px_buf_adds(&b, "## Training data\n\n");
    char *batches = compact(cJSON_GetObjectItemCaseSensitive(row, "source_batches"));
    char *params = compact(cJSON_GetObjectItemCaseSensitive(row, "params"));
    px_buf_printf(&b, "- fingerprint (SHA-256 of the training data): `%s`\n", jstr(row, "fingerprint"));
    px_buf_printf(&b, "- feature set: %s; definition hash `%s`\n", *set ? set : "(user table)",
                  *jstr(row, "definition_hash") ? jstr(row, "definition_hash") : "-");
    px_buf_printf(&b, "- ETL batches: %s\n", batches ? batches : "[]");
    px_buf_printf(&b, "- fit parameters: `%s`\n", params ? params : "{}");
    px_buf_printf(&b, "- reference distributions from %.0f training rows\n", jnum(vi.ref, "n"));
    px_buf_printf(&b, "- artifacts: manifest SHA-256 `%s`, model SHA-256 `%s`, signed with Ed25519\n",
                  jstr(row, "manifest_sha256"), jstr(row, "model_sha256"));
    free(batches);
    free(params);

    rc = b.data ? emit(&b, out, e) : px_err_set(e, PX_ENOMEM, "out of memory");
    px_buf_release(&b);
    info_release(&vi);
    return rc;
}
