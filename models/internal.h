/* internal.h: what the files of models/ share and no other folder may include:
 * the GLM worker with the index of an aliased column, the per-row pieces of the
 * random-intercept GLM (glmm.c, hier.c), the encoding (fitting
 * px_feature_info, building design rows), the C locale, and the SVM's frame.
 * Invariant: design column 0 is the intercept; feature f occupies columns
 * [f.col, f.col + f.ncols) of the GLM design, [f.col - 1, ...) of the SVM's. */
#ifndef PROGNOS_MODELS_INTERNAL_H
#define PROGNOS_MODELS_INTERNAL_H

#include "models/models.h"
#include <locale.h>
#include <math.h>

/* ---- glm.c --------------------------------------------------------------- */

typedef enum { PX_FAM_LOGIT, PX_FAM_POISSON } px_glm_family;

/* px_logit_fit / px_poisson_fit with one more output: on a singular
 * information matrix (PX_EINVAL), *bad_col (if not NULL) receives the first
 * design column that is a linear combination of the columns before it;
 * otherwise it is set to (size_t)-1. */
int px_glm_fit_family(px_glm_family fam, const double *X, const double *y, const double *w, const double *offset,
                      size_t n, size_t k, const px_glm_params *p, px_glm_fit *fit, size_t *bad_col, px_err *e);

/* ---- glmm.c, hier.c -------------------------------------------------------- */

#define GLMM_ETA_MAX 700.0 /* exp() stays finite */

/* mean, weight w = dmu/deta, its derivative dw/deta and the log-likelihood
 * (up to the constant -log y! for Poisson, added by the caller). */
static inline void glmm_unit(int poisson, double eta, double y, double *mu, double *w, double *w1, double *ll)
{
    if (eta > GLMM_ETA_MAX) eta = GLMM_ETA_MAX;
    if (eta < -GLMM_ETA_MAX) eta = -GLMM_ETA_MAX;
    if (poisson) {
        double m = exp(eta);
        *mu = m, *w = m, *w1 = m;
        *ll = y * eta - m;
    } else {
        /* log(1 + e^eta) without overflow; one exp (e^-|eta|) serves both, the same
         * values as evaluating exp(-eta) or exp(eta) on each side */
        double ex = exp(eta > 0 ? -eta : eta);
        double l1p = eta > 0 ? eta + log1p(ex) : log1p(ex);
        double m = eta > 0 ? 1 / (1 + ex) : ex / (1 + ex);
        double w0 = m * (1 - m);
        *mu = m, *w = w0, *w1 = w0 * (1 - 2 * m);
        *ll = y * eta - l1p;
    }
}

/* ---- svm.c, svm_io.c -------------------------------------------------------- */

size_t px_svm_inputs(const px_svm *s); /* k, the number of inputs */
px_svm_type px_svm_kind(const px_svm *s);
const px_svm_info *px_svm_get_info(const px_svm *s); /* valid while s lives */
/* The strict check px_svm_load applies to LibSVM's model text before LibSVM
 * reads it (exported for tests/fuzz): 0 and *nsv = the number of support
 * vectors, or -1. Only what it accepts may reach svm_load_model. */
int px_svm_check_text(const char *text, size_t len, px_svm_type type, size_t k, long *nsv);

/* ---- encode.c ------------------------------------------------------------ */

/* Fits one px_feature_info per column of d on the given rows (NULL = all):
 * numeric columns get the training mean, population sd and range; categorical
 * columns the levels seen in training (byte order) and the most frequent one as
 * reference. Columns constant in training are dropped. Assigns design columns
 * starting at 1 (column 0 is the intercept); *ncols receives 1 + the number of
 * feature columns. Caller frees *out with px_enc_free. 0, PX_EINVAL, PX_ENOMEM. */
int px_enc_fit(const px_dataset *d, const size_t *rows, size_t nrows, px_feature_info **out, size_t *ncols, px_err *e);
void px_enc_free(px_feature_info *f, size_t nf);

/* For categorical feature f and a dataset column with levels lv[0..nl): map[i]
 * = the index of lv[i] in f->levels, or f->ref when the level was not seen in
 * training. map must hold nl entries. */
void px_enc_level_map(const px_feature_info *f, char *const *lv, size_t nl, size_t *map);
/* The index of level v in f->levels (byte order, binary search), or f->ref when
 * v is NULL or was not seen in training: the one categorical lookup. */
size_t px_enc_level_find(const px_feature_info *f, const char *v);
/* A raw instance from values as the feature reader gives them: numeric input j
 * from num[j] (NAN: missing), categorical from text[j] (NULL or a level not
 * seen in training: NAN, which px_enc_row codes as the reference). */
void px_enc_raw(const px_feature_info *f, size_t nf, const double *num, const char *const *text, double *raw);

/* Checks one raw instance (numeric values, or categorical level indexes into
 * the feature's levels; NAN = missing). Returns 0 or PX_EINVAL naming the feature. */
int px_enc_check(const px_feature_info *f, size_t nf, const double *raw, px_err *e);
/* Writes the design row of a checked raw instance: out[0] = 1 (intercept),
 * then the standardized numeric values (missing -> 0, the training mean) and
 * the one-hot columns. out holds ncols values. */
void px_enc_row(const px_feature_info *f, size_t nf, const double *raw, double *out, size_t ncols);
/* Name of design column c: "(intercept)", "age_years", "sex=M" (truncated to len). */
void px_enc_colname(const px_feature_info *f, size_t nf, size_t c, char *buf, size_t len);

/* ---- textio.c: strict parsing of the text formats ------------------------ */

/* A cursor over bytes [p, end). Each function consumes what it accepts and
 * returns 0, or returns -1 and leaves the cursor where it was. */
typedef struct px_tx {
    const char *p, *end;
} px_tx;
int px_tx_lit(px_tx *c, const char *s); /* exactly these bytes */
int px_tx_size(px_tx *c, size_t *out);  /* decimal digits, no sign, no leading zero */
int px_tx_int(px_tx *c, long *out);     /* [-]digits within int range */
/* A finite number as %.17g / %.8g print it in the C locale: [-]d[.d][e[+-]d];
 * no hex, no "inf", no spaces. Call with the C locale in force (uselocale). */
int px_tx_num(px_tx *c, double *out);
int px_tx_gnum(px_tx *c, double *out); /* px_tx_num, or nan / -nan / inf / -inf */
/* A length-prefixed string "<len> <bytes>" (bytes may hold anything but NUL). */
int px_tx_str(px_tx *c, const char **s, size_t *len);

/* ---- locale -------------------------------------------------------------- */

/* The "C" locale object (created once; NULL if newlocale failed), for
 * uselocale() around printing and parsing numbers. */
locale_t px_c_locale(void);

#endif
