/* model_io.c: a px_model to and from the line-oriented text "prognos-model 1":
 * numbers %.17g in the C locale (so a load gives back the same doubles, and a
 * load followed by a save the same bytes), the last line a SHA-256 of the rest.
 * A load checks the checksum first, then parses strictly and names the line and
 * what it expected there. */
#include "models/model_int.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- serialization ------------------------------------------------------- */

/* %.17g is exact for doubles; every NaN is written as "nan" so that a load
 * followed by a save gives the same bytes. */
static int put_num(px_buf *b, const char *pre, double v)
{
    if (isnan(v)) return px_buf_printf(b, "%snan", pre);
    return px_buf_printf(b, "%s%.17g", pre, v);
}

static int put_str(px_buf *b, const char *pre, const char *s)
{
    return px_buf_printf(b, "%s%zu %s", pre, strlen(s), s);
}

static int save_body(const px_model *m, px_buf *b, px_err *e)
{
    int bad = px_buf_adds(b, MODEL_MAGIC) < 0 || px_buf_printf(b, "algo %s\n", px_algo_name(m->algo)) < 0 ||
              px_buf_printf(b, "n_train %zu\nfeatures %zu %zu\n", m->n_train, m->nf, m->ncols) < 0;
    for (size_t j = 0; !bad && j < m->nf; j++) {
        const px_feature_info *f = &m->f[j];
        bad = put_str(b, "feature ", f->name) < 0;
        if (f->kind == PX_COL_NUMERIC) {
            bad = bad ||
                  px_buf_printf(b, " numeric %s %zu %zu", f->dropped ? "dropped" : "used", f->col, f->ncols) < 0 ||
                  put_num(b, " ", f->mean) < 0 || put_num(b, " ", f->sd) < 0 || put_num(b, " ", f->min) < 0 ||
                  put_num(b, " ", f->max) < 0 || px_buf_addc(b, '\n') < 0;
        } else {
            bad = bad || px_buf_printf(b, " categorical %s %zu %zu %zu %zu\n", f->dropped ? "dropped" : "used", f->col,
                                       f->ncols, f->nlevels, f->ref) < 0;
            for (size_t l = 0; !bad && l < f->nlevels; l++)
                bad = put_str(b, "level ", f->levels[l]) < 0 || px_buf_addc(b, '\n') < 0;
        }
    }
    bad = bad || put_str(b, "warning ", m->warning) < 0 || px_buf_addc(b, '\n') < 0;
    if (!bad && is_glm(m->algo)) {
        size_t k = m->ncols;
        bad = put_num(b, "glm ", m->l2) < 0 ||
              px_buf_printf(b, " %d %d %d", m->iterations, m->converged, m->separation) < 0 ||
              put_num(b, " ", m->deviance) < 0 || put_num(b, " ", m->null_deviance) < 0 ||
              put_num(b, " ", m->loglik) < 0 || px_buf_adds(b, "\nbeta") < 0;
        for (size_t c = 0; !bad && c < k; c++) bad = put_num(b, " ", m->beta[c]) < 0;
        bad = bad || px_buf_addc(b, '\n') < 0;
        for (size_t r = 0; !bad && r < k; r++) {
            bad = px_buf_adds(b, "cov") < 0;
            for (size_t c = 0; !bad && c < k; c++) bad = put_num(b, " ", m->cov[r * k + c]) < 0;
            bad = bad || px_buf_addc(b, '\n') < 0;
        }
    } else if (!bad) {
        px_buf sv = {0};
        if (px_svm_save(m->svm, &sv, e) < 0) return PX_ENOMEM;
        bad = px_buf_printf(b, "svm %zu\n", sv.len) < 0 || px_buf_add(b, sv.data, sv.len) < 0;
        px_buf_release(&sv);
    }
    /* optional line (absent in files saved before bounds existed) */
    bad = bad || put_num(b, "bounds ", m->eta_lo) < 0 || put_num(b, " ", m->eta_hi) < 0 ||
          put_num(b, " ", m->v_lo) < 0 || put_num(b, " ", m->v_hi) < 0 || px_buf_addc(b, '\n') < 0;
    bad = bad || px_buf_adds(b, "end\n") < 0;
    return bad ? px_err_set(e, PX_ENOMEM, "cannot save model: out of memory") : 0;
}

int px_model_save(const px_model *m, px_buf *out, px_err *e)
{
    px_buf b = {0};
    locale_t loc = px_c_locale();
    if (!loc) return px_err_set(e, PX_ENOMEM, "cannot save model: no C locale");
    locale_t old = uselocale(loc);
    int rc = save_body(m, &b, e);
    uselocale(old);
    if (rc == 0 && (px_sha256_trailer_add(&b) != 0 || px_buf_add(out, b.data, b.len) < 0))
        rc = px_err_set(e, PX_ENOMEM, "cannot save model: out of memory");
    px_buf_release(&b);
    return rc;
}

/* ---- loading ------------------------------------------------------------- */

/* One step of the parser: on failure it names what was expected. */
#define NEED(cond, what)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            why = (what);                                                                                              \
            goto bad;                                                                                                  \
        }                                                                                                              \
    } while (0)

static size_t left(const px_tx *c) { return (size_t)(c->end - c->p); }

static int parse_feature(px_tx *c, px_feature_info *f, size_t *next_col, const char **why_out)
{
    const char *why = NULL, *s;
    size_t len;
    NEED(px_tx_lit(c, "feature ") == 0 && px_tx_str(c, &s, &len) == 0, "a feature line");
    NEED(len >= 1 && len < sizeof f->name, "a feature name of 1 to 63 bytes");
    memcpy(f->name, s, len);
    f->name[len] = '\0';
    int numeric;
    if (px_tx_lit(c, " numeric ") == 0)
        numeric = 1;
    else if (px_tx_lit(c, " categorical ") == 0)
        numeric = 0;
    else
        NEED(0, "the feature's kind");
    f->kind = numeric ? PX_COL_NUMERIC : PX_COL_CATEGORICAL;
    if (px_tx_lit(c, "used ") == 0)
        f->dropped = 0;
    else if (px_tx_lit(c, "dropped ") == 0)
        f->dropped = 1;
    else
        NEED(0, "used or dropped");
    NEED(px_tx_size(c, &f->col) == 0 && px_tx_lit(c, " ") == 0 && px_tx_size(c, &f->ncols) == 0,
         "the feature's columns");
    if (f->dropped)
        NEED(f->col == 0 && f->ncols == 0, "no columns for a dropped feature");
    else
        NEED(f->col == *next_col && f->ncols >= 1, "the next design columns");
    if (numeric) {
        NEED(px_tx_lit(c, " ") == 0 && px_tx_num(c, &f->mean) == 0 && px_tx_lit(c, " ") == 0 &&
                 px_tx_num(c, &f->sd) == 0 && px_tx_lit(c, " ") == 0 && px_tx_num(c, &f->min) == 0 &&
                 px_tx_lit(c, " ") == 0 && px_tx_num(c, &f->max) == 0 && px_tx_lit(c, "\n") == 0,
             "mean, sd, min and max");
        NEED(f->min <= f->max && f->sd >= 0, "a range and an sd >= 0");
        if (!f->dropped) NEED(f->ncols == 1 && f->sd > 0, "one column and sd > 0 for a used numeric feature");
    } else {
        size_t nl;
        NEED(px_tx_lit(c, " ") == 0 && px_tx_size(c, &nl) == 0 && px_tx_lit(c, " ") == 0 &&
                 px_tx_size(c, &f->ref) == 0 && px_tx_lit(c, "\n") == 0,
             "the number of levels and the reference");
        /* every level line takes at least 9 bytes: bound the allocation by the input */
        NEED(nl <= left(c) / 9, "no more levels than the input holds");
        if (f->dropped)
            NEED(nl <= 1 && (f->ref < nl || (nl == 0 && f->ref == 0)), "at most one level");
        else
            NEED(nl >= 2 && f->ref < nl && f->ncols == nl - 1, "nlevels - 1 columns");
        f->levels = calloc(nl ? nl : 1, sizeof *f->levels);
        NEED(f->levels, "memory");
        /* f->nlevels counts the levels allocated so far, so a failure frees exactly those */
        for (size_t l = 0; l < nl; l++) {
            NEED(px_tx_lit(c, "level ") == 0 && px_tx_str(c, &s, &len) == 0, "a level line");
            f->levels[l] = malloc(len + 1);
            NEED(f->levels[l], "memory");
            f->nlevels = l + 1;
            memcpy(f->levels[l], s, len);
            f->levels[l][len] = '\0';
            NEED(l == 0 || strcmp(f->levels[l - 1], f->levels[l]) < 0, "levels in strictly increasing byte order");
            NEED(px_tx_lit(c, "\n") == 0, "the end of a level line");
        }
    }
    *next_col += f->ncols;
    return 0;
bad:
    *why_out = why;
    return -1;
}

static px_model *parse_model(const char *t, size_t len, const char **why_out, const char **at)
{
    const char *why = NULL;
    px_tx c = {t, t + len};
    px_model *m = calloc(1, sizeof *m);
    if (!m) {
        *why_out = "memory";
        return NULL;
    }
    const char *s;
    size_t slen;
    NEED(px_tx_lit(&c, MODEL_MAGIC) == 0, "the first line \"prognos-model 1\"");
    NEED(px_tx_lit(&c, "algo ") == 0, "an algo line");
    {
        static const char *const names[] = {"logit\n", "poisson\n", "svc\n", "svr\n"};
        int found = -1;
        for (int a = 0; a < 4 && found < 0; a++)
            if (px_tx_lit(&c, names[a]) == 0) found = a;
        NEED(found >= 0, "a known algorithm");
        m->algo = (px_algo)found;
    }
    size_t nf, ncols;
    NEED(px_tx_lit(&c, "n_train ") == 0 && px_tx_size(&c, &m->n_train) == 0 && px_tx_lit(&c, "\nfeatures ") == 0 &&
             px_tx_size(&c, &nf) == 0 && px_tx_lit(&c, " ") == 0 && px_tx_size(&c, &ncols) == 0 &&
             px_tx_lit(&c, "\n") == 0,
         "n_train and features lines");
    NEED(nf >= 1 && nf <= left(&c) / 30, "a feature count the input can hold");
    NEED(ncols >= 2 && ncols <= left(&c) / 2 + 2, "a column count the input can hold");
    m->f = calloc(nf, sizeof *m->f);
    NEED(m->f, "memory");
    m->nf = nf;
    size_t next = 1;
    for (size_t j = 0; j < nf; j++) {
        if (parse_feature(&c, &m->f[j], &next, &why) < 0) goto bad;
        for (size_t q = 0; q < j; q++) NEED(strcmp(m->f[q].name, m->f[j].name) != 0, "unique feature names");
    }
    NEED(next == ncols, "feature columns that add up to the column count");
    m->ncols = ncols;
    NEED(px_tx_lit(&c, "warning ") == 0 && px_tx_str(&c, &s, &slen) == 0 && px_tx_lit(&c, "\n") == 0 &&
             slen < sizeof m->warning,
         "a warning line");
    memcpy(m->warning, s, slen);
    m->warning[slen] = '\0';
    if (is_glm(m->algo)) {
        long it, cv, sep;
        size_t k = ncols;
        NEED(px_tx_lit(&c, "glm ") == 0 && px_tx_num(&c, &m->l2) == 0 && m->l2 >= 0 && px_tx_lit(&c, " ") == 0 &&
                 px_tx_int(&c, &it) == 0 && it >= 0 && px_tx_lit(&c, " ") == 0 && px_tx_int(&c, &cv) == 0 &&
                 (cv == 0 || cv == 1) && px_tx_lit(&c, " ") == 0 && px_tx_int(&c, &sep) == 0 &&
                 (sep == 0 || sep == 1) && px_tx_lit(&c, " ") == 0 && px_tx_num(&c, &m->deviance) == 0 &&
                 px_tx_lit(&c, " ") == 0 && px_tx_num(&c, &m->null_deviance) == 0 && px_tx_lit(&c, " ") == 0 &&
                 px_tx_num(&c, &m->loglik) == 0 && px_tx_lit(&c, "\n") == 0,
             "the glm line");
        m->iterations = (int)it;
        m->converged = (int)cv;
        m->separation = (int)sep;
        NEED(k <= left(&c) / 2 / k, "a covariance the input can hold");
        m->beta = malloc(k * sizeof *m->beta);
        m->cov = malloc(k * k * sizeof *m->cov);
        NEED(m->beta && m->cov, "memory");
        NEED(px_tx_lit(&c, "beta") == 0, "the beta line");
        for (size_t q = 0; q < k; q++)
            NEED(px_tx_lit(&c, " ") == 0 && px_tx_num(&c, &m->beta[q]) == 0, "finite coefficients");
        NEED(px_tx_lit(&c, "\n") == 0, "the end of the beta line");
        for (size_t r = 0; r < k; r++) {
            NEED(px_tx_lit(&c, "cov") == 0, "a cov line");
            for (size_t q = 0; q < k; q++)
                NEED(px_tx_lit(&c, " ") == 0 && px_tx_gnum(&c, &m->cov[r * k + q]) == 0, "covariances");
            NEED(px_tx_lit(&c, "\n") == 0, "the end of a cov line");
        }
        for (size_t r = 0; r < k; r++)
            for (size_t q = 0; q < r; q++)
                NEED(m->cov[r * k + q] == m->cov[q * k + r] || (isnan(m->cov[r * k + q]) && isnan(m->cov[q * k + r])),
                     "a symmetric covariance");
        NEED(model_compute_terms(m) == 0, "memory");
    } else {
        size_t sl;
        NEED(px_tx_lit(&c, "svm ") == 0 && px_tx_size(&c, &sl) == 0 && px_tx_lit(&c, "\n") == 0 && sl <= left(&c),
             "an svm section header");
        px_err se;
        m->svm = px_svm_load((const unsigned char *)c.p, sl, &se);
        NEED(m->svm || se.code != PX_ENOMEM, "memory");
        NEED(m->svm, "a valid svm section");
        c.p += sl;
        NEED(px_svm_inputs(m->svm) == ncols - 1, "an svm with one input per design column");
        NEED(px_svm_kind(m->svm) == (m->algo == PX_ALGO_SVC ? PX_SVM_SVC : PX_SVM_SVR), "an svm of the model's type");
    }
    model_default_bounds(m);
    if (px_tx_lit(&c, "bounds ") == 0) {
        NEED(px_tx_gnum(&c, &m->eta_lo) == 0 && px_tx_lit(&c, " ") == 0 && px_tx_gnum(&c, &m->eta_hi) == 0 &&
                 px_tx_lit(&c, " ") == 0 && px_tx_gnum(&c, &m->v_lo) == 0 && px_tx_lit(&c, " ") == 0 &&
                 px_tx_gnum(&c, &m->v_hi) == 0 && px_tx_lit(&c, "\n") == 0,
             "the bounds line");
        NEED(m->eta_lo <= m->eta_hi && m->v_lo <= m->v_hi && isfinite(m->v_lo), "ordered bounds");
    }
    NEED(px_tx_lit(&c, "end\n") == 0 && c.p == c.end, "the end line");
    return m;
bad:
    *why_out = why;
    *at = c.p;
    px_model_free(m);
    return NULL;
}

px_model *px_model_load(const unsigned char *bytes, size_t len, px_err *e)
{
    const char *t = (const char *)bytes;
    const size_t tl = PX_SHA256_TRAILER_LEN;
    if (!bytes || len < strlen(MODEL_MAGIC) + tl || memcmp(t, MODEL_MAGIC, strlen(MODEL_MAGIC)) != 0) {
        px_err_set(e, PX_ECORRUPT, "cannot load model: not a prognos model (or truncated)");
        return NULL;
    }
    long long covered = px_sha256_trailer_check(bytes, len);
    if (covered == PX_TRAILER_MISSING || t[len - tl - 1] != '\n') {
        px_err_set(e, PX_ECORRUPT, "cannot load model: truncated (no checksum line at the end)");
        return NULL;
    }
    if (covered < 0) {
        px_err_set(e, PX_ECORRUPT, "cannot load model: checksum mismatch (the bytes are corrupt or truncated)");
        return NULL;
    }
    locale_t loc = px_c_locale();
    if (!loc) {
        px_err_set(e, PX_ENOMEM, "cannot load model: no C locale");
        return NULL;
    }
    locale_t old = uselocale(loc);
    const char *why = "memory", *at = t;
    px_model *m = parse_model(t, len - tl, &why, &at);
    uselocale(old);
    if (!m) {
        int line = 1;
        for (const char *q = t; q < at; q++) line += *q == '\n';
        if (strcmp(why, "memory") == 0)
            px_err_set(e, PX_ENOMEM, "cannot load model: out of memory");
        else
            px_err_set(e, PX_ECORRUPT, "cannot load model: malformed or inconsistent content at line %d: expected %s",
                       line, why);
    }
    return m;
}
