/* models.h: model fitting, prediction and evaluation.
 *
 * Logistic regression (IRLS/Newton, optional ridge) and a Poisson GLM for length
 * of stay on GSL; LibSVM C-SVC and epsilon-SVR; the encoding (scaling, one-hot)
 * fitted on training rows and stored with the model; evaluation metrics.
 * GSL's default error handler aborts the process: every entry point that calls GSL
 * turns it off first (px_models_init, once per process), and every GSL status is checked. Library calls return 0 or a negative PX_E*
 * code and fill the caller's px_err; constructors return NULL on error. */
#ifndef PROGNOS_MODELS_H
#define PROGNOS_MODELS_H

#include "features/features.h"

/* Turns GSL's abort-on-error handler off, once per process (pthread_once). The
 * fitting, evaluation and KPI functions call it themselves; a caller that uses GSL
 * directly may call it too. */
void px_models_init(void);

/* ---- dense GLM fitting (the numerical core) ----------------------------- */

typedef struct px_glm_params {
    double l2;          /* ridge penalty: adds l2 * sum(beta_j^2) / 2 to the negative
                         * log-likelihood, for every column with penalize[j] != 0 */
    const unsigned char *penalize;  /* k flags, or NULL: penalize every column except 0 (the intercept) */
    int max_iter;       /* Newton/IRLS iterations (default 50) */
    double tol;         /* stop when |dev - dev_old| / (|dev| + 0.1) < tol (R's glm.control rule; default 1e-10) */
    int threads;        /* threads for forming X'WX (default 2; 1 = none; fewer on small n). The
                         * same input and thread count give the same bits; another count
                         * changes only the rounding of the sums */
} px_glm_params;

px_glm_params px_glm_default_params(void);

typedef struct px_glm_fit {
    size_t k;
    double *beta;       /* k estimates */
    double *se;         /* k standard errors from the inverse (penalized) information
                         * (poisson: the robust sandwich, see px_poisson_fit) */
    double *cov;        /* k*k covariance matrix (row-major) */
    int iterations;
    int converged;      /* 1 when the tolerance was met within max_iter */
    int separation;     /* 1 when (quasi-)complete separation was detected: fitted probabilities
                         * at 0 or 1 and diverging coefficients, along a direction that separates
                         * the rows; estimates are then not finite MLEs (the fit stops early) */
    double deviance, null_deviance, loglik;
    char warning[256];  /* "" or why the fit is suspect */
} px_glm_fit;

/* Logistic regression of y (0/1) on X (n x k, row-major; include an intercept
 * column yourself). w: prior weights (NULL = 1). offset: NULL or n values.
 * Fills *fit (release with px_glm_fit_release). Returns 0, PX_EINVAL (bad
 * input, singular information matrix: the message names the column), PX_ENOMEM. */
int px_logit_fit(const double *X, const double *y, const double *w, const double *offset, size_t n, size_t k,
                 const px_glm_params *p, px_glm_fit *fit, px_err *e);
/* Poisson regression with log link of a count y >= 0 (same conventions).
 * Standard errors are the robust (sandwich, HC0) ones, valid under over-dispersion. */
int px_poisson_fit(const double *X, const double *y, const double *w, const double *offset, size_t n, size_t k,
                   const px_glm_params *p, px_glm_fit *fit, px_err *e);
void px_glm_fit_release(px_glm_fit *fit);   /* accepts a zeroed or released struct */

/* ---- LibSVM (the numerical core) ---------------------------------------- */

typedef enum { PX_SVM_SVC, PX_SVM_SVR } px_svm_type;

typedef struct px_svm_params {
    px_svm_type type;
    double C;            /* cost; 0 = choose by cross-validation from a grid */
    double gamma;        /* RBF width; 0 = choose by cross-validation (grid around 1/k) */
    double epsilon;      /* SVR tube width (default 0.1, on the label's scale) */
    int cv_folds;        /* folds for the grid search (default 3) */
    size_t max_rows;     /* training-size policy: at most this many rows (default 10000), a
                          * seeded, stratified (SVC) random subsample beyond it */
    double cache_mb;     /* LibSVM kernel cache in MB (default 200) */
    uint64_t seed;
} px_svm_params;

px_svm_params px_svm_default_params(void);

typedef struct px_svm_info {
    size_t n_rows, n_used, n_sv;
    double C, gamma;
    double cv_score;     /* SVC: cross-validated AUC; SVR: cross-validated RMSE */
    double class_weight_pos; /* SVC: weight of the positive class (n_neg / n_pos) */
    size_t n_cv;         /* rows the grid search used (a stratified subsample of at most 5000
                          * of the n_used rows); 0 when C and gamma were both given (cv_score NAN) */
} px_svm_info;

typedef struct px_svm px_svm;   /* opaque: owns its LibSVM model and support vectors */

/* X: n x k standardized design without an intercept; y: 0/1 (SVC) or a value (SVR).
 * info (may be NULL) receives what was done. Caller frees with px_svm_free. NULL
 * on error. Deterministic for a given seed: the final training seeds LibSVM's
 * rand() (srand) under a library mutex, so other code in the process that calls
 * rand() concurrently would disturb that. */
px_svm *px_svm_fit(const double *X, const double *y, size_t n, size_t k, const px_svm_params *p, px_svm_info *info,
                   px_err *e);
/* SVC: probability of class 1 (Platt scaling from LibSVM); SVR: the prediction. */
double px_svm_predict(const px_svm *s, const double *x);
/* Deterministic bytes (LibSVM's text format in a length-checked frame); caller frees *out. */
int px_svm_save(const px_svm *s, px_buf *out, px_err *e);
/* Bytes must have passed an integrity check first (LibSVM's parser crashes on
 * truncated input); still refuses malformed frames with PX_ECORRUPT (the frame
 * carries its length and a SHA-256, and LibSVM's text is checked line by line
 * before LibSVM parses it). Not thread-safe (LibSVM's loader calls setlocale):
 * never call it concurrently. This library serializes its own LibSVM loads,
 * saves and trainings with one mutex, but the setlocale calls still change the
 * process locale for a moment, so other threads must not rely on it meanwhile. */
px_svm *px_svm_load(const unsigned char *bytes, size_t len, px_err *e);
void px_svm_free(px_svm *s);
size_t px_svm_nsv(const px_svm *s);

/* ---- models: encoding + an algorithm ------------------------------------ */

typedef enum { PX_ALGO_LOGIT, PX_ALGO_POISSON, PX_ALGO_SVC, PX_ALGO_SVR } px_algo;
const char *px_algo_name(px_algo a);            /* "logit", "poisson", "svc", "svr" */
int px_algo_parse(const char *s, px_algo *a);   /* 0 or PX_EINVAL */

/* One raw input of a model, as fitted on the training rows. */
typedef struct px_feature_info {
    char name[64];
    px_col_kind kind;
    double mean, sd;      /* numeric: training mean and standard deviation (scaling) */
    double min, max;      /* numeric: training range */
    size_t nlevels;       /* categorical: levels seen in training, byte order */
    char **levels;
    size_t ref;           /* categorical: reference level (most frequent in training; ties: first) */
    size_t col, ncols;    /* design-matrix columns it occupies (numeric: 1; categorical: nlevels-1; 0 if dropped) */
    int dropped;          /* 1: constant in training, not used */
} px_feature_info;

typedef struct px_term {
    char name[96];        /* "(intercept)", "age_years", "sex=M" */
    double beta, se;      /* on the original scale of the feature */
} px_term;

typedef struct px_fit_params {
    px_algo algo;
    px_glm_params glm;
    px_svm_params svm;
    double max_value;     /* regression: predictions never above this (default INFINITY; the
                           * registry passes PX_MODEL_LOS_MAX_DAYS for length of stay) */
} px_fit_params;

/* Upper bound of a length-of-stay prediction in days, and of any regression
 * prediction of a model file saved before bounds were stored. */
#define PX_MODEL_LOS_MAX_DAYS 365.0
#define PX_MODEL_LEGACY_MAX PX_MODEL_LOS_MAX_DAYS


px_fit_params px_fit_default_params(px_algo algo);

typedef struct px_fit_info {
    size_t n_train;
    int iterations, converged, separation;
    double deviance, null_deviance;
    px_svm_info svm;
    double seconds;
    char warning[256];
} px_fit_info;

typedef struct px_model px_model;   /* opaque */

/* Bounds on every prediction (px_model_predict): a GLM's linear predictor is
 * clamped to the range it took on the training rows (a probability is never more
 * extreme than the fit gave a training row, however far a new row lies; a
 * separated fit's are extreme already: the registry's gates catch those); the
 * value is clamped to [lo, hi]:
 * probabilities [0, 1], regression the training labels' range capped at
 * max_value. A model file without stored bounds gets eta unbounded and
 * [0, 1] or [0, PX_MODEL_LEGACY_MAX]. The eta bounds are -inf and inf for SVMs. */
void px_model_bounds(const px_model *m, double *eta_lo, double *eta_hi, double *lo, double *hi);

/* Fits the encoding and the algorithm on the given rows of d (rows NULL: all
 * d->n rows, nrows ignored). A GLM is fitted on the standardized design, so a
 * ridge penalty (p->glm.l2) applies to standardized coefficients. Caller frees
 * with px_model_free. NULL on error (the message says why: no rows, a label
 * that is not 0/1 for a classifier, a singular design naming the column ...). */
px_model *px_model_fit(const px_dataset *d, const size_t *rows, size_t nrows, const px_fit_params *p,
                       px_fit_info *info, px_err *e);
void px_model_free(px_model *m);   /* accepts NULL */

px_algo px_model_algo(const px_model *m);
size_t px_model_nfeatures(const px_model *m);
/* Valid while m lives. */
const px_feature_info *px_model_feature(const px_model *m, size_t j);
/* Index of a feature by name, or -1. */
int px_model_feature_index(const px_model *m, const char *name);
/* Coefficients on the features' original scale (logit, poisson); *n = 0 for SVMs.
 * The array is owned by m. */
const px_term *px_model_terms(const px_model *m, size_t *n);

/* Predicts one instance. raw: px_model_nfeatures(m) values in the model's feature
 * order; numeric values as is, categorical values as an index into that
 * feature's levels; NAN = missing (imputed by the training mean / the reference level).
 * *value: probability (logit, svc), expected value (poisson: the mean; svr).
 * contrib (NULL or nfeatures): each feature's contribution on the linear-predictor
 * scale relative to the training mean / reference level (logit: log-odds;
 * poisson: log of the mean; SVMs: the change in value when the feature is set to
 * its mean / reference). Returns 0 or PX_EINVAL naming the feature. Thread-safe. */
int px_model_predict(const px_model *m, const double *raw, double *value, double *contrib, px_err *e);
/* One instance from the feature reader (px_feat_scan): input j in m's feature
 * order is num[j] when numeric (NAN: missing) or text[j] when categorical (NULL:
 * missing; a level not seen in training is NAN too, which px_model_predict codes
 * as the reference). Writes the nfeatures raw values px_model_predict takes. Every consumer of feature rows
 * (training's design, KPI scoring, the drift check) goes through this lookup
 * and px_enc_row's scaling, one-hot coding and imputation. */
void px_model_raw_row(const px_model *m, const double *num, const char *const *text, double *raw);
/* The index of the categorical level given by the n bytes at s (no NUL needed)
 * among f's training levels, or (size_t)-1 when training never saw it: the one
 * level lookup, used by px_model_raw_row and by the server's JSON inputs. */
size_t px_model_level_index(const px_feature_info *f, const char *s, size_t n);
/* Scores rows of a dataset whose columns are matched by name and whose levels are
 * matched by text (a level unseen in training counts as the reference). rows:
 * n row indexes, or NULL for rows 0..n-1. out: n values. */
int px_model_score(const px_model *m, const px_dataset *d, const size_t *rows, size_t n, double *out, px_err *e);

/* Serialization: the same model gives the same bytes (a text format,
 * "prognos-model 1", numbers printed with %.17g in the C locale). Caller frees *out. */
int px_model_save(const px_model *m, px_buf *out, px_err *e);
/* Parses px_model_save's bytes. Anything malformed, truncated or inconsistent is
 * refused with PX_ECORRUPT; never crashes on any input. Bytes holding an SVM
 * must have passed the registry's integrity check (see px_svm_load). */
px_model *px_model_load(const unsigned char *bytes, size_t len, px_err *e);

/* ---- models compiled to SQL (sql.c) -------------------------------------- */

/* A GLM's coefficients on the standardized design (px_model_ncols values), or
 * NULL for SVMs. Owned by m. */
const double *px_model_beta(const px_model *m);
/* Appends to out one SQL expression (float8) equal to px_model_predict's value
 * for a logit or poisson model: the encoding, the clamped linear predictor, the
 * inverse link and the value bounds, constants printed exactly (%.17g).
 * colsql[j]: an SQL expression for input j in the model's feature order, float8
 * for numeric inputs (NULL = missing), text for categorical ones (NULL or an
 * unseen level = the reference). The caller vouches for colsql (quoted
 * identifiers); level texts are quoted here. 0, PX_EINVAL (an SVM: not
 * compilable; a missing colsql), PX_ENOMEM. */
int px_model_sql(const px_model *m, const char *const *colsql, px_buf *out, px_err *e);
/* The linear predictor sum_c beta[c] x[c] on m's encoding, unclamped, for any
 * coefficients on the same design (beta: px_model_ncols(m) values; the model's
 * own, or a hierarchical model's fixed effects: see px_hier_sql_eta). */
int px_model_sql_eta(const px_model *m, const double *beta, const char *const *colsql, px_buf *out, px_err *e);
/* "CREATE OR REPLACE FUNCTION fname(<input> float8|text, ...) RETURNS float8
 * LANGUAGE sql IMMUTABLE PARALLEL SAFE AS '<px_model_sql>';" (fname is written
 * as given: the caller quotes it). */
int px_model_sql_function(const px_model *m, const char *fname, px_buf *out, px_err *e);

/* ---- random-intercept GLM (glmm.c) -------------------------------------- */

/* The hierarchical model CMS's Hospital Compare measures use: eta_i = x_i'beta +
 * u_j(i), unit (facility) intercepts u_j ~ N(0, tau^2) around the fixed intercept
 * mu = beta[0]; logit for 0/1 outcomes, Poisson/log for counts (days). Fitted by
 * the Laplace approximation, the deviance lme4::glmer(..., nAGQ = 1) optimizes,
 * by Newton steps on (beta, tau) with each unit's conditional mode a 1-D Newton
 * problem; agrees with glmer to the tolerance stated in tests/unit/test_glmm.c. */
typedef struct px_glmm_params {
    int max_iter;       /* outer Newton iterations (default 200) */
    double tol;         /* stop when the Newton decrement / 2 < tol (|F| + 1) (default 1e-12) */
    int threads;        /* threads for the starting pooled GLM (default 2) */
    const double *start;/* NULL: start from the pooled GLM and tau = 0.5; else k + 1 values
                         * (beta, then tau > 0), e.g. a previous fit's (the bootstrap's refits) */
} px_glmm_params;

px_glmm_params px_glmm_default_params(void);

typedef struct px_glmm_fit {
    px_algo algo;       /* PX_ALGO_LOGIT or PX_ALGO_POISSON */
    size_t k;           /* fixed effects, column 0 the intercept mu */
    double *beta;       /* k */
    double *se;         /* k: from the profiled information with tau fixed (as glmer's vcov) */
    double tau;         /* SD of the unit intercepts (>= 0) */
    size_t ngroups;
    double *mode;       /* ngroups conditional modes of u_j (log-odds / log scale), glmer's ranef */
    double *post_sd;    /* ngroups conditional SDs of u_j, glmer's condVar */
    size_t *n_group;    /* ngroups rows per unit */
    double *y_group;    /* ngroups sums of the outcome per unit */
    double deviance;    /* -2 x the Laplace log-likelihood (glmer's -2 logLik) */
    int iterations, converged;
    char warning[256];
} px_glmm_fit;

/* X: n x k row-major design, column 0 all ones; y: 0/1 (logit) or counts
 * >= 0 (poisson; a non-integer y is fitted by the same quasi-likelihood); group: n unit indexes in 0..ngroups-1, every unit
 * with at least one row. Fills *fit (release with px_glmm_fit_release).
 * Returns 0, PX_EINVAL (bad input naming the row, separation, a singular
 * design), PX_ENOMEM. */
int px_glmm_fit_dense(px_algo algo, const double *X, const double *y, const size_t *group, size_t n, size_t k,
                      size_t ngroups, const px_glmm_params *p, px_glmm_fit *fit, px_err *e);
void px_glmm_fit_release(px_glmm_fit *fit);   /* accepts a zeroed or released struct */

/* Applying a fitted model to one unit's rows without refitting: eta: the n rows'
 * fixed-effect linear predictors x_i'beta (mu included), y their outcomes. The
 * unit's intercept is estimated by empirical Bayes with (beta, tau) fixed (the
 * conditional mode, a 1-D Newton problem, and its conditional SD sd). Then
 * predicted = sum g(eta_i + u), expected = sum g(eta_i) (the average unit),
 * ratio = predicted / expected (CMS's standardized ratio), and its interval from
 * the unit's normal posterior: predicted is increasing in u, so the interval is
 * exactly [P(u - z sd), P(u + z sd)] / expected. tau = 0 gives ratio 1. */
typedef struct px_glmm_unit {
    double u, sd, predicted, expected, ratio, lo, hi;
} px_glmm_unit;

int px_glmm_unit_ratio(px_algo algo, const double *eta, const double *y, size_t n, double tau, double conf,
                       px_glmm_unit *out);
/* The same from the outcomes' sum sy alone: with the canonical links (logit,
 * log) the unit's conditional mode depends on the outcomes only through their
 * sum, so a caller holding per-unit sums need not keep every outcome. */
int px_glmm_unit_ratio_sum(px_algo algo, const double *eta, size_t n, double sy, double tau, double conf,
                           px_glmm_unit *out);

/* ---- the hierarchical model of a risk model (hier.c) ---------------------- */

/* The random-intercept model fitted on the same encoded design as a GLM risk
 * model (same columns, standardized the same way), with the units (facilities)
 * named: what `prognos train` stores with a version as hierarchical.json and
 * `kpi compute` applies without refitting. */
typedef struct px_hier px_hier;   /* opaque */

typedef struct px_hier_params {
    px_glmm_params glmm;
    int boot;           /* bootstrap draws over units, CMS-style (default 20; 0 = none) */
    uint64_t seed;      /* the bootstrap's seed (default 1): same seed, same intervals */
    double conf;        /* interval level (default 0.95) */
} px_hier_params;

px_hier_params px_hier_default_params(void);

/* Fits on rows (NULL: all) of d, whose unit of each row is the text column
 * d->extra[unit_col] (rows without a unit are left out). m: a logit or poisson
 * model fitted on d's columns (its encoding is reused). Per unit it stores
 * the conditional mode and SD of the intercept, the standardized ratio
 * predicted / expected on the unit's rows with its normal-posterior interval
 * (coefficients known), and with boot > 0 the CMS bootstrap interval (units
 * resampled with replacement, the model refitted, each unit's intercept drawn
 * from its posterior under the refitted parameters; 2.5th/97.5th percentiles).
 * NULL on error (message says why). */
px_hier *px_hier_fit(const px_model *m, const px_dataset *d, const size_t *rows, size_t nrows, size_t unit_col,
                     const px_hier_params *p, px_err *e);
void px_hier_free(px_hier *h);   /* accepts NULL */
/* hierarchical.json (cJSON, formatted, numbers %.17g-exact); caller frees with free(). NULL on ENOMEM. */
char *px_hier_json(const px_hier *h);
/* Parses hierarchical.json for the model it was fitted with (the design
 * columns must match m's). PX_ECORRUPT on anything malformed. */
px_hier *px_hier_parse(const char *text, size_t len, const px_model *m, px_err *e);
px_algo px_hier_algo(const px_hier *h);
double px_hier_tau(const px_hier *h);
const px_glmm_fit *px_hier_glmm(const px_hier *h);   /* the fit (valid while h lives) */
/* Fixed-effect linear predictor (mu included, no unit intercept) of one raw
 * instance in m's feature order (as px_model_predict takes it). */
int px_hier_eta(const px_hier *h, const px_model *m, const double *raw, double *eta, px_err *e);

/* px_hier_eta as one SQL expression (see px_model_sql for colsql). */
int px_hier_sql_eta(const px_hier *h, const px_model *m, const char *const *colsql, px_buf *out, px_err *e);

/* Design rows on a model's encoding: ncols = intercept + encoded columns. */
size_t px_model_ncols(const px_model *m);
int px_model_design_row(const px_model *m, const double *raw, double *out, px_err *e);
/* X: n x px_model_ncols(m), from the rows of d (columns matched by name, levels by text). */
int px_model_design(const px_model *m, const px_dataset *d, const size_t *rows, size_t n, double *X, px_err *e);

/* ---- evaluation ---------------------------------------------------------- */

#define PX_EVAL_GROUPS 10
#define PX_EVAL_THRESHOLDS 7

typedef struct px_eval_bin {
    size_t n, events;
    double auc, auc_se, auc_lo, auc_hi;  /* Mann-Whitney AUC; DeLong (1988) variance; 95% normal interval clipped to [0,1] */
    double auprc;                        /* average precision, as scikit-learn's average_precision_score */
    double brier;                        /* mean squared error of the probabilities */
    double cal_intercept;                /* calibration-in-the-large: a in logit(P(y)) = a + logit(p) */
    double cal_slope;                    /* b in logit(P(y)) = a + b logit(p) */
    double hl_chi2, hl_p;                /* Hosmer-Lemeshow over deciles of risk, df = groups (a holdout: nothing fitted on it) */
    int hl_df;
    size_t ngroups;
    struct { size_t n; double events, mean_pred, obs_rate; } group[PX_EVAL_GROUPS];  /* deciles of risk */
    struct { double threshold, sens, spec, ppv, npv; size_t tp, fp, tn, fn; } thr[PX_EVAL_THRESHOLDS];
} px_eval_bin;

typedef struct px_eval_reg {
    size_t n;
    double mae, rmse, r2, mean_obs, mean_pred;
} px_eval_reg;

/* y: 0/1; p: probabilities in [0,1]. Needs both classes for AUC (else PX_EINVAL). */
int px_eval_binary(const double *y, const double *p, size_t n, px_eval_bin *out, px_err *e);
/* Paired DeLong test of two scores on the same rows: diff = auc1 - auc2, its SE, two-sided p. */
int px_eval_delong_paired(const double *y, const double *p1, const double *p2, size_t n, double *diff, double *se,
                          double *pvalue, px_err *e);
int px_eval_regression(const double *y, const double *yhat, size_t n, px_eval_reg *out, px_err *e);
/* JSON text of an evaluation (cJSON, compact, keys in a fixed order); caller frees with free(). NULL on ENOMEM. */
char *px_eval_bin_json(const px_eval_bin *ev);
char *px_eval_reg_json(const px_eval_reg *ev);

#endif
