/* test_feature_encode.c: one reader, one encoder (issue 15). The same rows of a
 * feature table reach a model's design row by the two routes prognos has:
 * training's (px_dataset_load, then px_model_design, which maps the dataset's
 * level indexes) and the row-at-a-time route of KPI scoring in C and the drift
 * check (px_feat_scan, then px_model_raw_row and px_model_design_row). Every
 * labelled row's design vector must be identical bit for bit, matched by
 * encounter_id. Then, for a logit or poisson model, the model compiled to SQL
 * (px_model_sql over px_feat_table_value_sql's inputs) is run by PostgreSQL on
 * the same rows and must equal px_model_predict to 1e-12 relative.
 * With OUT, every row's answer as the server's /v1 predict would print it from
 * the training route's vector (the value and each contribution through srv_fmt6,
 * the exact value as %a, the imputed / extrapolated / unknown_level inputs), one
 * JSON object a line, for kpi_indb.sh to compare with the server's by-encounter
 * answers. Run by kpi_indb.sh: URI MODEL_DIR PUBKEY TABLE LABEL [OUT]. */
#include "registry/registry.h"
#include "serve/internal.h"
#include "../unit/check.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>

/* a failed precondition ends the test */
#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #c, e.msg); return 1; } } while (0)

typedef struct enc_rows {
    const px_model *m;
    size_t k, n, cap;
    char (*id)[37];
    double *X, *raw, *pred;
    int bad;
    px_err *e;
} enc_rows;

static int on_row(const px_feat_row *row, void *arg, px_err *e)
{
    enc_rows *s = arg;
    if (s->n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 4096;
        s->id = realloc(s->id, nc * sizeof *s->id);
        s->X = realloc(s->X, nc * s->k * sizeof *s->X);
        s->pred = realloc(s->pred, nc * sizeof *s->pred);
        if (!s->id || !s->X || !s->pred) return px_err_set(e, PX_ENOMEM, "out of memory");
        s->cap = nc;
    }
    if (!row->text[0]) return px_err_set(e, PX_EINVAL, "a row without encounter_id");
    snprintf(s->id[s->n], 37, "%s", row->text[0]);
    px_model_raw_row(s->m, row->num + 1, row->text + 1, s->raw);
    int rc = px_model_design_row(s->m, s->raw, s->X + s->n * s->k, e);
    if (rc == 0) rc = px_model_predict(s->m, s->raw, &s->pred[s->n], NULL, e);
    s->n++;
    return rc;
}

static int cmp_id(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s URI MODEL_DIR PUBKEY TABLE LABEL [OUT]\n", argv[0]);
        return 2;
    }
    px_models_init();
    px_err e = {0};
    PGconn *c = PQconnectdb(argv[1]);
    REQUIRE(PQstatus(c) == CONNECTION_OK);
    px_model *m = px_reg_load_dir(argv[2], argv[3], &e);
    if (!m) {
        fprintf(stderr, "cannot load the model: %s\n", e.msg);
        return 1;
    }
    size_t nf = px_model_nfeatures(m), k = px_model_ncols(m);

    /* training's route */
    const char **names = calloc(nf + 1, sizeof *names);
    for (size_t j = 0; j < nf; j++) names[j] = px_model_feature(m, j)->name;
    const char *extra[] = {"encounter_id", NULL};
    px_dataset_params p = px_dataset_default_params();
    p.table = argv[4], p.label = argv[5], p.features = names, p.extra = extra;
    px_dataset *d = px_dataset_load(c, &p, &e);
    if (!d) {
        fprintf(stderr, "px_dataset_load: %s (%s)\n", e.msg, e.detail);
        return 1;
    }
    double *XA = malloc(d->n * k * sizeof *XA);
    REQUIRE(px_model_design(m, d, NULL, d->n, XA, &e) == 0);

    /* the reader's route */
    px_feat_table *t = px_feat_table_open(c, argv[4], &e);
    REQUIRE(t != NULL);
    px_feat_field *f = calloc(nf + 1, sizeof *f);
    REQUIRE(px_feat_field_set(&f[0], "t.encounter_id::text", PX_WIRE_TEXT, &e) == 0);
    for (size_t j = 0; j < nf; j++)
        REQUIRE(px_feat_table_field(c, t, "t", names[j], px_model_feature(m, j)->kind == PX_COL_CATEGORICAL, &f[j + 1],
                                  &e) == 0);
    char *lab = PQescapeIdentifier(c, argv[5], strlen(argv[5]));
    char from[1024];
    snprintf(from, sizeof from, "FROM %s t WHERE t.%s IS NOT NULL", px_feat_table_quoted(t), lab);
    enc_rows s = {.m = m, .k = k, .raw = malloc((nf + 1) * sizeof(double)), .e = &e};
    int rc = px_feat_scan(c, f, nf + 1, from, on_row, &s, &e);
    if (rc) fprintf(stderr, "px_feat_scan: %s (%s)\n", e.msg, e.detail);
    REQUIRE(rc == 0);
    REQUIRE(s.n == d->n);

    /* match by encounter_id and compare bit for bit */
    char **ids = malloc(s.n * sizeof *ids);
    for (size_t i = 0; i < s.n; i++) ids[i] = s.id[i];
    qsort(ids, s.n, sizeof *ids, cmp_id);
    size_t same = 0, categorical = 0;
    for (size_t j = 0; j < nf; j++) categorical += px_model_feature(m, j)->kind == PX_COL_CATEGORICAL;
    for (size_t i = 0; i < d->n; i++) {
        const char *id = d->extra[i];
        char **hit = bsearch(&id, ids, s.n, sizeof *ids, cmp_id);
        REQUIRE(hit != NULL);
        size_t r = (size_t)((char(*)[37])(void *)*hit - s.id);
        if (memcmp(XA + i * k, s.X + r * k, k * sizeof *XA) == 0) same++;
        else if (same + 1 == i + 1) fprintf(stderr, "row %s differs\n", id);
    }
    printf("%s: %zu rows x %zu design columns (%zu inputs, %zu categorical): %zu identical bit for bit\n", argv[4],
           d->n, k, nf, categorical, same);
    CHECK(same == d->n && d->n > 0);

    /* what the server must answer for each row, from training's vector */
    if (argc == 7) {
        FILE *out = fopen(argv[6], "w");
        REQUIRE(out != NULL);
        double *raw = malloc((nf + 1) * sizeof *raw), *contrib = malloc((nf + 1) * sizeof *contrib);
        size_t **maps = calloc(nf + 1, sizeof *maps);
        int *dcol = calloc(nf + 1, sizeof *dcol);
        double *scored = malloc((d->n + 1) * sizeof *scored);
        REQUIRE(raw && contrib && maps && dcol && scored);
        /* training's scoring of the dataset: the values below must be these, bit for bit */
        REQUIRE(px_model_score(m, d, NULL, d->n, scored, &e) == 0);
        size_t same_score = 0;
        /* the dataset's columns and levels in the model's terms, as px_model_score matches them */
        for (size_t j = 0; j < nf; j++) {
            const px_feature_info *fi = px_model_feature(m, j);
            dcol[j] = -1;
            for (size_t q = 0; q < d->p; q++)
                if (strcmp(d->names[q], fi->name) == 0) dcol[j] = (int)q;
            REQUIRE(dcol[j] >= 0);
            if (fi->kind == PX_COL_CATEGORICAL) {
                size_t nl = d->nlevels[dcol[j]];
                REQUIRE((maps[j] = calloc(nl + 1, sizeof *maps[j])));
                for (size_t l = 0; l < nl; l++) maps[j][l] = px_model_level_index(fi, d->levels[dcol[j]][l],
                                                                                   strlen(d->levels[dcol[j]][l]));
            }
        }
        for (size_t i = 0; i < d->n; i++) {
            cJSON *o = cJSON_CreateObject(), *cs = cJSON_AddObjectToObject(o, "contributions");
            cJSON *fl[3] = {cJSON_AddArrayToObject(o, "imputed"), cJSON_AddArrayToObject(o, "extrapolated"),
                            cJSON_AddArrayToObject(o, "unknown_level")};
            for (size_t j = 0; j < nf; j++) {
                const px_feature_info *fi = px_model_feature(m, j);
                double v = d->x[i * d->p + (size_t)dcol[j]];
                int w = -1;
                if (fi->kind == PX_COL_NUMERIC) {
                    if (!isfinite(v)) v = NAN, w = 0;
                    else if (v < fi->min || v > fi->max) w = 1;
                } else if (isnan(v)) {
                    w = 0;
                } else {
                    size_t l = maps[j][(size_t)v];
                    v = l == (size_t)-1 ? NAN : (double)l;
                    if (isnan(v)) w = 2;
                }
                raw[j] = v;
                if (w >= 0) cJSON_AddItemToArray(fl[w], cJSON_CreateString(fi->name));
            }
            double value;
            REQUIRE(px_model_predict(m, raw, &value, contrib, &e) == 0);
            same_score += memcmp(&value, &scored[i], sizeof value) == 0;
            char num[64];
            cJSON_AddStringToObject(o, "id", d->extra[i]);
            num[srv_fmt6(num, value)] = '\0';
            cJSON_AddStringToObject(o, "value", num);
            snprintf(num, sizeof num, "%a", value);
            cJSON_AddStringToObject(o, "exact", num);
            for (size_t j = 0; j < nf; j++) {
                if (px_model_feature(m, j)->dropped) continue;
                num[srv_fmt6(num, contrib[j])] = '\0';
                cJSON_AddStringToObject(cs, px_model_feature(m, j)->name, num);
            }
            char *line = cJSON_PrintUnformatted(o);
            REQUIRE(line != NULL);
            fprintf(out, "%s\n", line);
            free(line);
            cJSON_Delete(o);
        }
        REQUIRE(fclose(out) == 0);
        printf("%s: the server's expected answers for %zu rows written; %zu equal px_model_score bit for bit\n",
               argv[4], d->n, same_score);
        CHECK(same_score == d->n);
        free(scored);
        for (size_t j = 0; j < nf; j++) free(maps[j]);
        free(maps), free(dcol), free(raw), free(contrib);
    }

    /* the model compiled to SQL, run by PostgreSQL on the same rows */
    px_algo algo = px_model_algo(m);
    if (algo == PX_ALGO_LOGIT || algo == PX_ALGO_POISSON) {
        char **cols = calloc(nf + 1, sizeof *cols);
        for (size_t j = 0; j < nf; j++)
            REQUIRE((cols[j] = px_feat_table_value_sql(c, t, "t", names[j],
                                                       px_model_feature(m, j)->kind == PX_COL_CATEGORICAL, &e)));
        px_buf q = {0};
        px_buf_adds(&q, "SELECT t.encounter_id::text, ");
        REQUIRE(px_model_sql(m, (const char *const *)cols, &q, &e) == 0);
        px_buf_printf(&q, " %s", from);
        PGresult *r = PQexec(c, q.data);
        REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
        REQUIRE((size_t)PQntuples(r) == s.n);
        double worst = 0;
        size_t close = 0;
        for (int i = 0; i < PQntuples(r); i++) {
            const char *id = PQgetvalue(r, i, 0);
            char **hit = bsearch(&id, ids, s.n, sizeof *ids, cmp_id);
            REQUIRE(hit != NULL);
            size_t k2 = (size_t)((char(*)[37])(void *)*hit - s.id);
            double v = strtod(PQgetvalue(r, i, 1), NULL), w = s.pred[k2];
            double rel = v == w ? 0 : fabs(v - w) / fmax(fabs(v), fabs(w));
            if (rel > worst) worst = rel;
            close += rel <= 1e-12;
        }
        printf("%s: the model compiled to SQL equals px_model_predict on %zu of %zu rows (largest relative difference %.3g)\n",
               argv[4], close, s.n, worst);
        CHECK(close == s.n);
        PQclear(r);
        px_buf_release(&q);
        for (size_t j = 0; j < nf; j++) free(cols[j]);
        free(cols);
    }
    PQfreemem(lab);
    px_feat_fields_release(f, nf + 1);
    free(f);
    px_feat_table_free(t);
    free(ids), free(s.id), free(s.X), free(s.raw), free(s.pred), free(XA), free(names);
    px_dataset_free(d);
    px_model_free(m);
    PQfinish(c);
    return check_report("test_feature_encode");
}
