/* report.c: what the registry tells people: the list of models and versions,
 * one version in detail (text or JSON), and the Markdown model card. Every
 * artifact shown is read through the signed manifest (nothing unverified is
 * displayed); the row's own fields come from registry.versions. Reports are
 * built in memory and written in one go, so a failure prints nothing partial.
 * The model card is in report_card.c, what both use in report_util.c. */
#include "registry/report_int.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
                snprintf(head, sizeof head, "AUC %s", rep_auc_ci(auc, sizeof auc, m, ""));
            else
                snprintf(head, sizeof head, "RMSE %s, R2 %s", rep_num(a, sizeof a, rep_jnum(m, "rmse"), 3),
                         rep_num(lo, sizeof lo, rep_jnum(m, "r2"), 3));
            cJSON_Delete(m);
            snprintf(ver, sizeof ver, "v%s", PQgetvalue(r, i, 1));
            px_buf_printf(&b, "%-16s %-8s %-8s %-11s %-20s %-36s %s\n", PQgetvalue(r, i, 0), ver, PQgetvalue(r, i, 2),
                          PQgetvalue(r, i, 3), *PQgetvalue(r, i, 6) ? PQgetvalue(r, i, 6) : "-", head,
                          PQgetvalue(r, i, 4));
        }
    }
    rc = b.data ? rep_emit(&b, out, e) : px_err_set(e, PX_ENOMEM, "out of memory");
done:
    PQclear(r);
    px_buf_release(&b);
    return rc;
}

/* ---- one version ------------------------------------------------------------------ */

/* One evaluation as a text line. */
static void eval_line(px_buf *b, const cJSON *ev, int binary)
{
    char s1[32], s2[32], s3[96], s4[32], s6[32], s7[32];
    if (binary)
        px_buf_printf(b, "n %s, events %s, AUC %s, Brier %s, calibration slope %s\n",
                      rep_count(s1, sizeof s1, rep_jnum(ev, "n")), rep_count(s2, sizeof s2, rep_jnum(ev, "events")),
                      rep_auc_ci(s3, sizeof s3, ev, "95% CI "), rep_num(s6, sizeof s6, rep_jnum(ev, "brier"), 4),
                      rep_num(s7, sizeof s7, rep_jnum(ev, "cal_slope"), 2));
    else
        px_buf_printf(b, "n %s, MAE %s, RMSE %s, R2 %s\n", rep_count(s1, sizeof s1, rep_jnum(ev, "n")),
                      rep_num(s2, sizeof s2, rep_jnum(ev, "mae"), 3), rep_num(s3, sizeof s3, rep_jnum(ev, "rmse"), 3),
                      rep_num(s4, sizeof s4, rep_jnum(ev, "r2"), 3));
}

static void show_text(px_buf *b, const version_info *vi)
{
    const cJSON *row = vi->row;
    int binary = strcmp(rep_jstr(row, "task"), "binary") == 0;
    char *params = rep_compact(cJSON_GetObjectItemCaseSensitive(row, "params"));
    char *split = rep_compact(cJSON_GetObjectItemCaseSensitive(row, "split"));
    char *batches = rep_compact(cJSON_GetObjectItemCaseSensitive(row, "source_batches"));
    char *aliases = rep_compact(cJSON_GetObjectItemCaseSensitive(row, "model_aliases"));
    px_buf_printf(b, "model %s v%d\n", rep_jstr(row, "name"), (int)rep_jnum(row, "version"));
    const cJSON *mine = cJSON_GetObjectItemCaseSensitive(row, "aliases");
    px_buf_adds(b, "  aliases          ");
    if (cJSON_GetArraySize(mine) == 0) px_buf_adds(b, "-");
    for (const cJSON *a = mine ? mine->child : NULL; a; a = a->next)
        px_buf_printf(b, "%s%s", a == mine->child ? "" : ", ", cJSON_IsString(a) ? a->valuestring : "");
    px_buf_printf(b, " (model: %s)\n", aliases ? aliases : "{}");
    px_buf_printf(b, "  algorithm        %s\n  task             %s\n", rep_jstr(row, "algo"), rep_jstr(row, "task"));
    px_buf_printf(b, "  feature set      %s\n  feature table    %s\n  label            %s\n",
                  *rep_jstr(row, "feature_set") ? rep_jstr(row, "feature_set") : "-", rep_jstr(row, "feature_table"),
                  rep_jstr(row, "label"));
    px_buf_printf(b, "  definition hash  %s\n  fingerprint      %s\n",
                  *rep_jstr(row, "definition_hash") ? rep_jstr(row, "definition_hash") : "-",
                  rep_jstr(row, "fingerprint"));
    px_buf_printf(b, "  params           %s\n  split            %s\n  source batches   %s\n", params ? params : "",
                  split ? split : "", batches ? batches : "");
    px_buf_printf(b, "  created          %s by %s\n  artifacts        %s\n", rep_jstr(row, "created_at"),
                  rep_jstr(row, "created_by"), rep_jstr(row, "artifact_dir"));
    px_buf_printf(b, "  manifest sha256  %s\n  model sha256     %s\n", rep_jstr(row, "manifest_sha256"),
                  rep_jstr(row, "model_sha256"));
    free(params);
    free(split);
    free(batches);
    free(aliases);

    px_buf_adds(b, "\nquality gates\n");
    rep_gates_section(b, vi, 0);
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
    px_buf_printf(b, "\nreference distributions (training rows, n %.0f)\n", rep_jnum(vi->ref, "n"));
    for (const cJSON *f = feats ? feats->child : NULL; f; f = f->next) {
        char s1[32], s2[32], s3[32], s4[32];
        px_buf_printf(b, "  %-24s %-12s missing %5.1f%%  ", rep_jstr(f, "name"), rep_jstr(f, "kind"),
                      100 * rep_jnum(f, "missing_share"));
        if (strcmp(rep_jstr(f, "kind"), "numeric") == 0) {
            px_buf_printf(b, "mean %s, range %s..%s, %d bins\n", rep_num(s1, sizeof s1, rep_jnum(f, "mean"), 3),
                          rep_num(s2, sizeof s2, rep_jnum(f, "min"), 3), rep_num(s3, sizeof s3, rep_jnum(f, "max"), 3),
                          cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(f, "counts")));
        } else {
            const cJSON *lv = cJSON_GetObjectItemCaseSensitive(f, "levels");
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(f, "shares");
            int nl = cJSON_GetArraySize(lv);
            for (int l = 0; l < nl && l < 6; l++) {
                const cJSON *name = cJSON_GetArrayItem(lv, l), *share = cJSON_GetArrayItem(sh, l);
                px_buf_printf(b, "%s%s %s%%", l ? ", " : "", cJSON_IsString(name) ? name->valuestring : "",
                              rep_num(s4, sizeof s4, cJSON_IsNumber(share) ? 100 * share->valuedouble : NAN, 1));
            }
            px_buf_printf(b, "%s\n", nl > 6 ? ", ..." : "");
        }
    }
    const cJSON *score = cJSON_GetObjectItemCaseSensitive(vi->ref, "score");
    if (score) {
        char s1[32], s2[32], s3[32];
        px_buf_printf(b, "  %-24s %-12s mean %s, range %s..%s\n", "(score)", "numeric",
                      rep_num(s1, sizeof s1, rep_jnum(score, "mean"), 4),
                      rep_num(s2, sizeof s2, rep_jnum(score, "min"), 4),
                      rep_num(s3, sizeof s3, rep_jnum(score, "max"), 4));
    }

    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(row, "alias_history");
    px_buf_adds(b, "\nalias history\n");
    if (cJSON_GetArraySize(hist) == 0) px_buf_adds(b, "  (none)\n");
    for (const cJSON *h = hist ? hist->child : NULL; h; h = h->next) {
        char from[16];
        double fv = rep_jnum(h, "from_version");
        if (isnan(fv)) snprintf(from, sizeof from, "-");
        else snprintf(from, sizeof from, "v%.0f", fv);
        px_buf_printf(b, "  %s  %-10s %s -> v%.0f  by %s: %s\n", rep_jstr(h, "at"), rep_jstr(h, "alias"), from,
                      rep_jnum(h, "to_version"), rep_jstr(h, "actor"),
                      *rep_jstr(h, "reason") ? rep_jstr(h, "reason") : "-");
    }
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(row, "decisions");
    px_buf_adds(b, "\nretraining decisions\n");
    if (cJSON_GetArraySize(dec) == 0) px_buf_adds(b, "  (none)\n");
    for (const cJSON *d = dec ? dec->child : NULL; d; d = d->next) {
        char cand[16], champ[16];
        double cv = rep_jnum(d, "candidate_version"), hv = rep_jnum(d, "champion_version");
        if (isnan(cv)) snprintf(cand, sizeof cand, "-");
        else snprintf(cand, sizeof cand, "v%.0f", cv);
        if (isnan(hv)) snprintf(champ, sizeof champ, "-");
        else snprintf(champ, sizeof champ, "v%.0f", hv);
        px_buf_printf(b, "  %s  %-10s candidate %s, champion %s: %s\n", rep_jstr(d, "at"), rep_jstr(d, "decision"),
                      cand,
                      champ, rep_jstr(d, "message"));
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
    int rc = rep_info_load(c, cfg, name, ref, "cannot show", &vi, e);
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
    rc = b.data ? rep_emit(&b, out, e) : px_err_set(e, PX_ENOMEM, "out of memory");
    px_buf_release(&b);
    rep_info_release(&vi);
    return rc;
}
