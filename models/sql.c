/* sql.c: a logistic or Poisson model (and its encoding) compiled to one SQL
 * expression, so that PostgreSQL scores a feature table in place with the same
 * arithmetic as px_model_predict: each design column as px_enc_row builds it
 * (numeric (v - mean) / sd, missing -> 0; one-hot against the reference level,
 * missing or unseen -> the reference), the linear predictor summed in design-column
 * order, clamped to the training range, the inverse link, the value bounds.
 * Every constant is printed with %.17g (exact for a double) as a float8 literal,
 * so the SQL score equals the C score up to the last bits of exp (the same libm).
 * Invariant: SVMs are not compiled (PX_EINVAL): they keep the C path. */
#include "models/internal.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A float8 constant: float8 '<%.17g>' ('Infinity' and '-Infinity' for the
 * unbounded clamps of a model saved before bounds existed). */
static int put_f8(px_buf *b, double v)
{
    if (isinf(v)) return px_buf_adds(b, v > 0 ? "float8 'Infinity'" : "float8 '-Infinity'");
    char num[40];
    locale_t loc = px_c_locale(), old = loc ? uselocale(loc) : (locale_t)0;
    snprintf(num, sizeof num, "%.17g", v);
    if (loc) uselocale(old);
    return px_buf_printf(b, "float8 '%s'", num);
}

/* A text constant as E'...' with quotes and backslashes doubled: read the same
 * whatever standard_conforming_strings says. */
static int put_text(px_buf *b, const char *s)
{
    int rc = px_buf_adds(b, "E'");
    for (; rc == 0 && *s; s++)
        rc = *s == '\'' ? px_buf_adds(b, "''") : *s == '\\' ? px_buf_adds(b, "\\\\") : px_buf_addc(b, *s);
    return rc ? rc : px_buf_addc(b, '\'');
}

static int check_inputs(const px_model *m, const char *const *colsql, px_err *e)
{
    px_algo a = px_model_algo(m);
    if (a != PX_ALGO_LOGIT && a != PX_ALGO_POISSON)
        return px_err_set(e, PX_EINVAL, "a %s model cannot be compiled to SQL (only logit and poisson)", px_algo_name(a));
    for (size_t j = 0; j < px_model_nfeatures(m); j++)
        if (!colsql || !colsql[j] || !colsql[j][0])
            return px_err_set(e, PX_EINVAL, "no SQL value for input '%s'", px_model_feature(m, j)->name);
    return 0;
}

int px_model_sql_eta(const px_model *m, const double *beta, const char *const *colsql, px_buf *out, px_err *e)
{
    int rc = check_inputs(m, colsql, e);
    if (rc) return rc;
    size_t nf = px_model_nfeatures(m);
    /* A numeric input's term beta * coalesce((v - mean) / sd, 0) is written as
     * (beta / sd) * coalesce(v, mean) with beta / sd * mean moved into the
     * intercept: the same value up to rounding (a few ulps of the terms, far below
     * the 1e-12 the SQL and C scores are held to), at three operator calls per
     * row and input instead of five (the compiled model is evaluated on every row
     * of a feature table). An input with no usable sd keeps the long form. */
    double b0 = beta[0];
    for (size_t j = 0; j < nf; j++) {
        const px_feature_info *f = px_model_feature(m, j);
        if (f->dropped || f->kind != PX_COL_NUMERIC) continue;
        if (f->sd != 0 && isfinite(f->sd) && isfinite(f->mean)) b0 -= beta[f->col] / f->sd * f->mean;
    }
    /* design column 0, the intercept */
    rc = px_buf_adds(out, "(");
    if (rc == 0) rc = put_f8(out, b0);
    for (size_t j = 0; j < nf && rc == 0; j++) {
        const px_feature_info *f = px_model_feature(m, j);
        if (f->dropped) continue;
        if (f->kind == PX_COL_NUMERIC) {
            rc = px_buf_adds(out, " + ");
            if (f->sd != 0 && isfinite(f->sd) && isfinite(f->mean)) {
                /* + (beta / sd) * coalesce(v, mean) */
                if (rc == 0) rc = put_f8(out, beta[f->col] / f->sd);
                if (rc == 0) rc = px_buf_printf(out, " * coalesce((%s), ", colsql[j]);
                if (rc == 0) rc = put_f8(out, f->mean);
                if (rc == 0) rc = px_buf_adds(out, ")");
                continue;
            }
            /* + beta * coalesce((v - mean) / sd, 0): px_enc_row's standardization */
            if (rc == 0) rc = put_f8(out, beta[f->col]);
            if (rc == 0) rc = px_buf_printf(out, " * coalesce(((%s) - ", colsql[j]);
            if (rc == 0) rc = put_f8(out, f->mean);
            if (rc == 0) rc = px_buf_adds(out, ") / ");
            if (rc == 0) rc = put_f8(out, f->sd);
            if (rc == 0) rc = px_buf_adds(out, ", float8 '0')");
            continue;
        }
        /* one-hot: the level's coefficient (reference, missing and unseen: 0) */
        rc = px_buf_printf(out, " + CASE (%s)", colsql[j]);
        for (size_t l = 0; l < f->nlevels && rc == 0; l++) {
            if (l == f->ref) continue;
            size_t c = f->col + (l < f->ref ? l : l - 1);
            rc = px_buf_adds(out, " WHEN ");
            if (rc == 0) rc = put_text(out, f->levels[l]);
            if (rc == 0) rc = px_buf_adds(out, " THEN ");
            if (rc == 0) rc = put_f8(out, beta[c]);
        }
        if (rc == 0) rc = px_buf_adds(out, " ELSE float8 '0' END");
    }
    if (rc == 0) rc = px_buf_adds(out, ")");
    return rc ? px_err_set(e, PX_ENOMEM, "cannot compile model to SQL: out of memory") : 0;
}

/* The linear predictor clamped to the training range: the same two comparisons as px_model_predict. */
static int put_clamped_eta(const px_model *m, const char *const *colsql, px_buf *out, px_err *e)
{
    double eta_lo, eta_hi;
    px_model_bounds(m, &eta_lo, &eta_hi, NULL, NULL);
    int rc = px_buf_adds(out, "least(greatest(");
    if (rc == 0 && (rc = px_model_sql_eta(m, px_model_beta(m), colsql, out, e)) != 0) return rc;
    if (rc == 0) rc = px_buf_adds(out, ", ");
    if (rc == 0) rc = put_f8(out, eta_lo);
    if (rc == 0) rc = px_buf_adds(out, "), ");
    if (rc == 0) rc = put_f8(out, eta_hi);
    if (rc == 0) rc = px_buf_adds(out, ")");
    return rc ? px_err_set(e, PX_ENOMEM, "cannot compile model to SQL: out of memory") : 0;
}

int px_model_sql(const px_model *m, const char *const *colsql, px_buf *out, px_err *e)
{
    int rc = check_inputs(m, colsql, e);
    if (rc) return rc;
    double lo, hi;
    px_model_bounds(m, NULL, NULL, &lo, &hi);
    /* value bounds, then the inverse link of the clamped eta: 1 / (1 + exp(-eta)) or exp(eta) */
    rc = px_buf_adds(out, "least(greatest(");
    if (rc == 0) rc = px_buf_adds(out, px_model_algo(m) == PX_ALGO_LOGIT ? "1 / (1 + exp(-" : "exp(");
    if (rc == 0 && (rc = put_clamped_eta(m, colsql, out, e)) != 0) return rc;
    if (rc == 0) rc = px_buf_adds(out, px_model_algo(m) == PX_ALGO_LOGIT ? ")), " : "), ");
    if (rc == 0) rc = put_f8(out, lo);
    if (rc == 0) rc = px_buf_adds(out, "), ");
    if (rc == 0) rc = put_f8(out, hi);
    if (rc == 0) rc = px_buf_adds(out, ")");
    return rc ? px_err_set(e, PX_ENOMEM, "cannot compile model to SQL: out of memory") : 0;
}

int px_model_sql_function(const px_model *m, const char *fname, px_buf *out, px_err *e)
{
    size_t nf = px_model_nfeatures(m);
    char **args = calloc(nf ? nf : 1, sizeof *args);
    px_buf body = {0};
    int rc = args ? 0 : px_err_set(e, PX_ENOMEM, "out of memory");
    for (size_t j = 0; j < nf && rc == 0; j++) {
        char a[32];
        snprintf(a, sizeof a, "$%zu", j + 1);
        if (!(args[j] = strdup(a))) rc = px_err_set(e, PX_ENOMEM, "out of memory");
    }
    if (rc == 0) rc = px_buf_adds(&body, "SELECT ") ? px_err_set(e, PX_ENOMEM, "out of memory") : 0;
    if (rc == 0) rc = px_model_sql(m, (const char *const *)args, &body, e);
    if (rc == 0) {
        /* parameters named after the inputs, in the model's order, float8 or text;
         * the body as a quoted string (AS '...' works on every PostgreSQL from 13) */
        int w = px_buf_printf(out, "CREATE OR REPLACE FUNCTION %s(", fname);
        for (size_t j = 0; j < nf && w == 0; j++) {
            const px_feature_info *f = px_model_feature(m, j);
            w = px_buf_adds(out, j ? ", \"" : "\"");
            for (const char *s = f->name; w == 0 && *s; s++) w = *s == '"' ? px_buf_adds(out, "\"\"") : px_buf_addc(out, *s);
            if (w == 0) w = px_buf_printf(out, "\" %s", f->kind == PX_COL_NUMERIC ? "float8" : "text");
        }
        if (w == 0) w = px_buf_adds(out, ")\nRETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE\nAS ");
        if (w == 0) w = put_text(out, body.data ? body.data : "");
        if (w == 0) w = px_buf_adds(out, ";\n");
        if (w) rc = px_err_set(e, PX_ENOMEM, "out of memory");
    }
    for (size_t j = 0; args && j < nf; j++) free(args[j]);
    free(args);
    px_buf_release(&body);
    return rc;
}
