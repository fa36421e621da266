/* model_int.h: what model.c (fitting, prediction, the design) and model_io.c
 * (save, load) share: the px_model structure and the steps a fit and a load
 * both take. Only these two files include it. */
#ifndef PROGNOS_MODELS_MODEL_INT_H
#define PROGNOS_MODELS_MODEL_INT_H

#include "models/internal.h"

#define MODEL_MAGIC "prognos-model 1\n"

struct px_model {
    px_algo algo;
    size_t nf;          /* raw inputs */
    px_feature_info *f; /* nf, owned */
    size_t ncols;       /* GLM design columns, intercept included (SVM: ncols - 1 inputs) */
    size_t n_train;
    /* logit, poisson: on the standardized design */
    double *beta, *cov; /* ncols, ncols*ncols (row-major) */
    double l2;
    int iterations, converged, separation;
    double deviance, null_deviance, loglik;
    /* prediction bounds: the linear predictor's range on the training rows (GLMs;
     * -inf..inf in a file saved before bounds existed) and the value's range */
    double eta_lo, eta_hi, v_lo, v_hi;
    char warning[256];
    px_term *terms; /* ncols, on the original scale (NULL for SVMs) */
    size_t nterms;
    /* svc, svr */
    px_svm *svm;
};

static inline int is_glm(px_algo a) { return a == PX_ALGO_LOGIT || a == PX_ALGO_POISSON; }

/* The value bounds a model gets when fitted or loaded from a file without them. */
void model_default_bounds(px_model *m);
/* Fills m->terms (coefficients on the original scale) from beta and cov: 0 or -1 (memory). */
int model_compute_terms(px_model *m);

#endif
