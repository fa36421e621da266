/* report_util.c: what the registry's reports (report.c: list and show;
 * report_card.c: the model card) share: writing a report in one go, reading
 * verified JSON and CSV artifacts, number formatting, one version's verified
 * artifacts (version_info) and the quality gates' section. */
#include "registry/report_int.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------------ */

int rep_emit(px_buf *b, FILE *out, px_err *e)
{
    if (b->len && fwrite(b->data, 1, b->len, out) != b->len) return px_err_set(e, PX_EIO, "cannot write the report");
    if (fflush(out) != 0) return px_err_set(e, PX_EIO, "cannot write the report");
    return 0;
}

double rep_jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

const char *rep_jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* A number with the given precision, or "-" when absent. */
const char *rep_num(char *buf, size_t n, double v, int digits)
{
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, "%.*f", digits, v);
    return buf;
}

/* Whole numbers (counts) without decimals. */
const char *rep_count(char *buf, size_t n, double v)
{
    if (isnan(v)) snprintf(buf, n, "-");
    else snprintf(buf, n, "%.0f", v);
    return buf;
}

/* "0.712 (95% CI 0.690-0.734)", or just the AUC when no interval was recorded. */
const char *rep_auc_ci(char *buf, size_t n, const cJSON *ev, const char *ci_word)
{
    double a = rep_jnum(ev, "auc"), lo = rep_jnum(ev, "auc_lo"), hi = rep_jnum(ev, "auc_hi");
    if (isnan(a)) snprintf(buf, n, "-");
    else if (isnan(lo) || isnan(hi)) snprintf(buf, n, "%.3f", a);
    else snprintf(buf, n, "%.3f (%s%.3f-%.3f)", a, ci_word, lo, hi);
    return buf;
}

/* Markdown table cell: '|' escaped, line breaks as spaces. */
void rep_md_cell(px_buf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        if (*p == '|') px_buf_adds(b, "\\|");
        else if (*p == '\n' || *p == '\r') px_buf_addc(b, ' ');
        else px_buf_addc(b, *p);
    }
}

/* Parses a verified JSON artifact; NULL with e set (PX_ENOTFOUND when not listed). */
cJSON *rep_read_json(const reg_manifest *m, const char *dir, const char *file, px_err *e)
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
 * 0 when the manifest does not list the file. Caller frees with rep_csv_free. */
void rep_csv_free(csv_rows *t)
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
            rep_csv_free(t);
            return -1;
        }
        memcpy(row, fields, nf * sizeof *row);
        t->row[t->n] = row;
        t->ncol[t->n++] = nf;
    }
    return (int)t->n;
}

int rep_read_csv(const reg_manifest *m, const char *dir, const char *file, csv_rows *t, px_err *e)
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

void rep_info_release(version_info *vi)
{
    reg_manifest_release(&vi->m);
    cJSON_Delete(vi->row);
    cJSON_Delete(vi->metrics);
    cJSON_Delete(vi->ref);
    rep_csv_free(&vi->coef);
    rep_csv_free(&vi->calib);
}

int rep_info_load(PGconn *c, const px_config *cfg, const char *name, const char *ref, const char *verb,
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
    if (!(vi->metrics = rep_read_json(&vi->m, vi->dir, "metrics.json", e))) {
        rc = e ? e->code : PX_ECORRUPT;
        goto fail;
    }
    if (!(vi->ref = rep_read_json(&vi->m, vi->dir, "reference.json", e))) {
        rc = e ? e->code : PX_ECORRUPT;
        goto fail;
    }
    if (rep_read_csv(&vi->m, vi->dir, "coefficients.csv", &vi->coef, e) < 0 ||
        rep_read_csv(&vi->m, vi->dir, "calibration.csv", &vi->calib, e) < 0) {
        rc = e ? e->code : PX_ECORRUPT;
        goto fail;
    }
    return 0;
fail:
    PQclear(r);
    rep_info_release(vi);
    return rc ? rc : PX_ECORRUPT;
}

char *rep_compact(const cJSON *j)
{
    return j ? cJSON_PrintUnformatted(j) : NULL;
}

/* The quality gates' verdict (metrics.json "gates", written at registration) as
 * text (md 0) or Markdown (md 1). Versions from before the gates say so. */
void rep_gates_section(px_buf *b, const version_info *vi, int md)
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
        const char *fix = rep_jstr(c, "fix");
        if (md) {
            px_buf_adds(b, "| ");
            rep_md_cell(b, rep_jstr(c, "gate"));
            px_buf_printf(b, " | %s | ", ok ? "passed" : "**failed**");
            rep_md_cell(b, rep_jstr(c, "why"));
            px_buf_adds(b, " | ");
            rep_md_cell(b, ok ? "" : fix);
            px_buf_adds(b, " |\n");
        } else {
            px_buf_printf(b, "  %-22s %-6s %s%s%s\n", rep_jstr(c, "gate"), ok ? "passed" : "FAILED", rep_jstr(c, "why"),
                          ok ? "" : "; fix: ", ok ? "" : fix);
        }
    }
    if (md) px_buf_addc(b, '\n');
}
