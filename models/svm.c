/* svm.c: LibSVM 3.24 C-SVC (RBF, Platt probabilities, class weights) and
 * epsilon-SVR, with a cross-validated grid search for C and gamma and the
 * training-size policy. A fitted px_svm owns a model that was loaded back from
 * its own saved bytes, so a fitted and a reloaded model predict the same bits.
 * LibSVM's global state (its print hook, rand(), setlocale in save/load) is
 * touched only under one mutex. The px_svm itself (its frame, load, save,
 * prediction) is in svm_io.c. */
#include "models/svm_int.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CV_MAX_ROWS 5000 /* rows the grid search uses at most (a stratified subsample) */

px_svm_params px_svm_default_params(void)
{
    px_svm_params p;
    memset(&p, 0, sizeof p);
    p.type = PX_SVM_SVC;
    p.C = 0;
    p.gamma = 0;
    p.epsilon = 0.1;
    p.cv_folds = 3;
    p.max_rows = 10000; /* ~1-3 min of training on 2 cores; prediction cost grows with the support vectors */
    p.cache_mb = 200;
    p.seed = 1;
    return p;
}

/* ---- small helpers ------------------------------------------------------- */

/* Fisher-Yates shuffle driven by the seeded generator (unbiased enough: 64-bit draws). */
static void shuffle(size_t *a, size_t n, uint64_t *st)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(px_splitmix64(st) % i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Picks m of the rows idx[0..n) (seeded; stratified by y for SVC) and sorts
 * them, so a subsample keeps the data's order. Writes them to out. */
static int subsample(const size_t *idx, size_t n, const double *y, int strat, size_t m, uint64_t *st, size_t *out)
{
    size_t *pos = malloc((n ? n : 1) * sizeof *pos), *neg = malloc((n ? n : 1) * sizeof *neg), np = 0, nn = 0;
    if (!pos || !neg) {
        free(pos);
        free(neg);
        return PX_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (strat && y[idx[i]] == 1)
            pos[np++] = idx[i];
        else
            neg[nn++] = idx[i];
    }
    size_t mp = 0, mn;
    if (strat) {
        /* proportional allocation, at least one row of each class */
        mp = (size_t)llround((double)m * (double)np / (double)n);
        if (mp < 1) mp = 1;
        if (mp > np) mp = np;
        if (m - mp > nn) mp = m - nn;
    }
    mn = m - mp;
    if (mn < 1 && nn > 0 && strat) {
        mn = 1;
        mp = m - 1;
    }
    shuffle(pos, np, st);
    shuffle(neg, nn, st);
    memcpy(out, pos, mp * sizeof *out);
    memcpy(out + mp, neg, mn * sizeof *out);
    qsort(out, m, sizeof *out, cmp_size);
    free(pos);
    free(neg);
    return 0;
}

typedef struct scored {
    double s;
    double y;
} scored;
static int cmp_scored(const void *a, const void *b)
{
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return x < y ? -1 : x > y;
}

/* Mann-Whitney AUC with mid-ranks for ties; NAN without both classes. */
static double auc_of(scored *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_scored);
    double rank_sum = 0, npos = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j].s == v[i].s) j++;
        double mid = (double)(i + j + 1) / 2; /* ranks i+1..j */
        for (size_t q = i; q < j; q++)
            if (v[q].y == 1) {
                rank_sum += mid;
                npos++;
            }
        i = j;
    }
    double nneg = (double)n - npos;
    if (npos == 0 || nneg == 0) return NAN;
    return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg);
}

/* LibSVM's sparse rows: zeros are left out (LibSVM reads a missing index as 0). */
static struct svm_node *make_nodes(const double *X, size_t k, const size_t *rows, size_t m, struct svm_node **xp)
{
    size_t nz = 0;
    for (size_t r = 0; r < m; r++)
        for (size_t a = 0; a < k; a++) nz += X[rows[r] * k + a] != 0;
    struct svm_node *sp = malloc((nz + m) * sizeof *sp);
    if (!sp) return NULL;
    size_t q = 0;
    for (size_t r = 0; r < m; r++) {
        xp[r] = sp + q;
        for (size_t a = 0; a < k; a++) {
            double v = X[rows[r] * k + a];
            if (v != 0) {
                sp[q].index = (int)a + 1;
                sp[q].value = v;
                q++;
            }
        }
        sp[q++].index = -1;
    }
    return sp;
}

static void base_param(struct svm_parameter *sp, const px_svm_params *p, double C, double gamma, double eps_scaled)
{
    memset(sp, 0, sizeof *sp);
    sp->svm_type = p->type == PX_SVM_SVC ? C_SVC : EPSILON_SVR;
    sp->kernel_type = RBF;
    sp->gamma = gamma;
    sp->cache_size = p->cache_mb;
    sp->eps = 1e-3; /* LibSVM's default stopping tolerance */
    sp->C = C;
    sp->p = eps_scaled;
    sp->shrinking = 1;
    sp->probability = 0;
}

/* ---- fitting ------------------------------------------------------------- */

typedef struct fitctx {
    const double *X, *y; /* y: SVC 0/1; SVR scaled */
    size_t k;
    const px_svm_params *p;
    double eps_scaled, ymean, ysd, wpos;
} fitctx;

/* Cross-validated score of (C, gamma) on rows cv[0..m) in folds fold[]: SVC the
 * mean over folds of the AUC of the decision values, SVR the pooled RMSE on the
 * label's scale. NAN on failure. */
static double cv_score(const fitctx *fc, const size_t *cv, const int *fold, size_t m, double C, double gamma, int nfold)
{
    size_t k = fc->k;
    struct svm_node **xp = malloc(m * sizeof *xp), **trx = malloc(m * sizeof *trx);
    double *try_ = malloc(m * sizeof *try_);
    scored *sc = malloc(m * sizeof *sc);
    struct svm_node *sp = xp ? make_nodes(fc->X, k, cv, m, xp) : NULL;
    double total = 0, sse = 0;
    int ok = xp && trx && try_ && sc && sp, nf = 0;
    int wl[1] = {1};
    double wv[1] = {fc->wpos};
    for (int f = 0; ok && f < nfold; f++) {
        struct svm_problem pr = {0, try_, trx};
        for (size_t i = 0; i < m; i++)
            if (fold[i] != f) {
                trx[pr.l] = xp[i];
                try_[pr.l] = fc->y[cv[i]];
                pr.l++;
            }
        struct svm_parameter par;
        base_param(&par, fc->p, C, gamma, fc->eps_scaled);
        if (fc->p->type == PX_SVM_SVC) {
            par.nr_weight = 1;
            par.weight_label = wl;
            par.weight = wv;
        }
        if (svm_check_parameter(&pr, &par)) {
            ok = 0;
            break;
        }
        struct svm_model *md = svm_train(&pr, &par);
        if (!md) {
            ok = 0;
            break;
        }
        size_t nsc = 0;
        for (size_t i = 0; i < m; i++) {
            if (fold[i] != f) continue;
            double dv = 0;
            svm_predict_values(md, xp[i], &dv);
            if (fc->p->type == PX_SVM_SVC) {
                /* dv > 0 votes for label[0]: orient so that larger means class 1 */
                sc[nsc].s = md->label[0] == 1 ? dv : -dv;
                sc[nsc].y = fc->y[cv[i]];
                nsc++;
            } else {
                double r = fc->ysd * (dv - fc->y[cv[i]]);
                sse += r * r;
            }
        }
        svm_free_and_destroy_model(&md);
        if (fc->p->type == PX_SVM_SVC) {
            double a = auc_of(sc, nsc);
            if (isnan(a)) {
                ok = 0;
                break;
            }
            total += a;
            nf++;
        }
    }
    free(xp);
    free(trx);
    free(try_);
    free(sc);
    free(sp);
    if (!ok) return NAN;
    return fc->p->type == PX_SVM_SVC ? total / nf : sqrt(sse / (double)m);
}

px_svm *px_svm_fit(const double *X, const double *y, size_t n, size_t k, const px_svm_params *pp, px_svm_info *info,
                   px_err *e)
{
    px_svm_params p = pp ? *pp : px_svm_default_params();
    const char *what = p.type == PX_SVM_SVC ? "svc" : "svr";
    px_svm *s = NULL;
    size_t *all = NULL, *used = NULL, *cvrows = NULL;
    int *fold = NULL;
    double *ys = NULL, *yu = NULL;
    struct svm_node **xp = NULL, *sp = NULL;
    struct svm_model *md = NULL;
    px_buf text = {0};
    int rc = 0; /* < 0: failed, e says why */
    if (p.type != PX_SVM_SVC && p.type != PX_SVM_SVR) {
        px_err_set(e, PX_EINVAL, "cannot fit svm: unknown type");
        return NULL;
    }
    if (!X || !y || n < 2 || k < 1 || n > INT_MAX || k >= INT_MAX / 2) {
        px_err_set(e, PX_EINVAL, "cannot fit %s: need at least 2 rows and 1 column (at most %d of each)", what,
                   INT_MAX / 2);
        return NULL;
    }
    if (!(p.C >= 0) || !(p.gamma >= 0) || !(p.epsilon >= 0) || !isfinite(p.C) || !isfinite(p.gamma) ||
        !isfinite(p.epsilon) || !(p.cache_mb > 0) || p.max_rows < 2) {
        px_err_set(e, PX_EINVAL, "cannot fit %s: bad parameters (C, gamma, epsilon >= 0, cache_mb > 0, max_rows >= 2)",
                   what);
        return NULL;
    }
    svm_quiet(); /* LibSVM prints progress to stdout unless told otherwise */
    int grid = p.C == 0 || p.gamma == 0;
    if (grid && (p.cv_folds < 2 || p.cv_folds > 20)) {
        px_err_set(e, PX_EINVAL, "cannot fit %s: cv_folds must be in [2, 20]", what);
        return NULL;
    }
    size_t npos = 0;
    for (size_t i = 0; i < n; i++) {
        if (p.type == PX_SVM_SVC && y[i] != 0 && y[i] != 1) {
            px_err_set(e, PX_EINVAL, "cannot fit svc: label of row %zu is not 0/1", i);
            return NULL;
        }
        if (!isfinite(y[i])) {
            px_err_set(e, PX_EINVAL, "cannot fit svr: label of row %zu is not finite", i);
            return NULL;
        }
        npos += y[i] == 1;
        for (size_t a = 0; a < k; a++)
            if (!isfinite(X[i * k + a])) {
                px_err_set(e, PX_EINVAL, "cannot fit %s: value of column %zu in row %zu is not finite", what, a, i);
                return NULL;
            }
    }
    int svc = p.type == PX_SVM_SVC;
    if (svc && (npos == 0 || npos == n)) {
        px_err_set(e, PX_EINVAL, "cannot fit svc: the label has only one class");
        return NULL;
    }

    s = calloc(1, sizeof *s);
    all = malloc(n * sizeof *all);
    used = malloc(n * sizeof *used);
    ys = malloc(n * sizeof *ys);
    if (!s || !all || !used || !ys) {
        rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
        goto done;
    }
    for (size_t i = 0; i < n; i++) all[i] = i;
    uint64_t st = p.seed;
    /* Training-size policy: LibSVM's training time grows with about the square
     * of the rows and prediction time with the support vectors, so beyond
     * max_rows a seeded (stratified) random subsample is used. */
    size_t m = n;
    if (n > p.max_rows) {
        m = p.max_rows;
        if (subsample(all, n, y, svc, m, &st, used) < 0) {
            rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
            goto done;
        }
    } else {
        memcpy(used, all, n * sizeof *used);
    }
    size_t upos = 0;
    for (size_t r = 0; r < m; r++) upos += y[used[r]] == 1;
    if (svc && (upos == 0 || upos == m)) {
        rc = px_err_set(e, PX_EINVAL, "cannot fit svc: the subsample has only one class");
        goto done;
    }
    s->type = p.type;
    s->k = k;
    s->ymean = 0;
    s->ysd = 1;
    double eps_scaled = 0;
    if (!svc) {
        /* SVR on the standardized label, so that the grid of C means the same
         * for any unit of the label; epsilon is given on the label's scale. */
        double sum = 0, ss = 0;
        for (size_t r = 0; r < m; r++) sum += y[used[r]];
        double mean = sum / (double)m;
        for (size_t r = 0; r < m; r++) ss += (y[used[r]] - mean) * (y[used[r]] - mean);
        double sd = sqrt(ss / (double)m);
        if (!(sd > 0)) sd = 1;
        s->ymean = mean;
        s->ysd = sd;
        eps_scaled = p.epsilon / sd;
    }
    for (size_t i = 0; i < n; i++) ys[i] = svc ? y[i] : (y[i] - s->ymean) / s->ysd;
    fitctx fc = {X, ys, k, &p, eps_scaled, s->ymean, s->ysd, svc ? (double)(m - upos) / (double)upos : 1};

    double bestC = p.C, bestG = p.gamma, best = NAN;
    size_t ncv = 0;
    if (grid) {
        const double Cs[3] = {0.1, 1, 10}, Gs[3] = {0.25, 1, 4};
        ncv = m < CV_MAX_ROWS ? m : CV_MAX_ROWS;
        cvrows = malloc(ncv * sizeof *cvrows);
        fold = malloc(ncv * sizeof *fold);
        if (!cvrows || !fold) {
            rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
            goto done;
        }
        if (ncv < m) {
            if (subsample(used, m, y, svc, ncv, &st, cvrows) < 0) {
                rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
                goto done;
            }
        } else {
            memcpy(cvrows, used, m * sizeof *cvrows);
        }
        /* stratified folds: each class dealt round-robin after a seeded shuffle */
        size_t *ord = malloc(ncv * sizeof *ord), np = 0, nn = 0;
        if (!ord) {
            rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
            goto done;
        }
        for (size_t r = 0; r < ncv; r++) ord[r] = r;
        shuffle(ord, ncv, &st);
        for (size_t q = 0; q < ncv; q++) {
            size_t r = ord[q];
            if (svc && y[cvrows[r]] == 1)
                fold[r] = (int)(np++ % (size_t)p.cv_folds);
            else
                fold[r] = (int)(nn++ % (size_t)p.cv_folds);
        }
        free(ord);
        if (svc ? (np < (size_t)p.cv_folds || nn < (size_t)p.cv_folds) : ncv < 2 * (size_t)p.cv_folds) {
            rc = px_err_set(e, PX_EINVAL, "cannot fit %s: too few rows of each class for %d-fold cross-validation",
                            what, p.cv_folds);
            goto done;
        }
        for (int ci = 0; ci < 3; ci++) {
            double C = p.C > 0 ? p.C : Cs[ci];
            if (p.C > 0 && ci > 0) break;
            for (int gi = 0; gi < 3; gi++) {
                double g = p.gamma > 0 ? p.gamma : Gs[gi] / (double)k;
                if (p.gamma > 0 && gi > 0) break;
                double sc = cv_score(&fc, cvrows, fold, ncv, C, g, p.cv_folds);
                if (isnan(sc)) continue;
                if (isnan(best) || (svc ? sc > best : sc < best)) {
                    best = sc;
                    bestC = C;
                    bestG = g;
                }
            }
        }
        if (isnan(best)) {
            rc = px_err_set(e, PX_EINVAL, "cannot fit %s: every grid point failed in cross-validation", what);
            goto done;
        }
    }

    /* final model on the used rows, with probabilities for SVC */
    xp = malloc(m * sizeof *xp);
    yu = malloc(m * sizeof *yu);
    if (!xp || !yu) {
        rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
        goto done;
    }
    for (size_t r = 0; r < m; r++) yu[r] = ys[used[r]];
    sp = make_nodes(X, k, used, m, xp);
    if (!sp) {
        rc = px_err_set(e, PX_ENOMEM, "cannot fit %s: out of memory", what);
        goto done;
    }
    struct svm_problem pr = {(int)m, yu, xp};
    struct svm_parameter par;
    base_param(&par, &p, bestC, bestG, eps_scaled);
    int wl[1] = {1};
    double wv[1] = {fc.wpos};
    if (svc) {
        par.nr_weight = 1;
        par.weight_label = wl;
        par.weight = wv;
        par.probability = 1;
    }
    const char *perr = svm_check_parameter(&pr, &par);
    if (perr) {
        rc = px_err_set(e, PX_EINVAL, "cannot fit %s: LibSVM refused the parameters: %s", what, perr);
        goto done;
    }
    pthread_mutex_lock(&svm_lock);
    /* LibSVM draws its folds for Platt scaling with rand(): seed it right before
     * training so the same data and seed give the same model. */
    srand((unsigned)(p.seed ^ (p.seed >> 32)));
    md = svm_train(&pr, &par);
    int trc = md ? svm_libsvm_bytes(md, &text, e) : px_err_set(e, PX_ENOMEM, "cannot fit %s: LibSVM failed", what);
    pthread_mutex_unlock(&svm_lock);
    if (md) s->info.n_sv = (size_t)md->l;
    if (md) svm_free_and_destroy_model(&md);
    if ((rc = trc) < 0) goto done;

    s->info.n_rows = n;
    s->info.n_used = m;
    s->info.n_cv = ncv;
    s->info.C = bestC;
    s->info.gamma = bestG;
    s->info.cv_score = best;
    s->info.class_weight_pos = svc ? fc.wpos : 0;
    /* the kept model is the one loaded back from these bytes (owning its
     * support vectors, and equal bit for bit to any later load) */
    if ((rc = svm_frame_build(s, text.data, text.len, e)) < 0) goto done;
    px_svm *out = px_svm_load((const unsigned char *)s->frame.data, s->frame.len, e);
    if (!out) {
        rc = -1;
        goto done;
    }
    if (info) *info = out->info;
    px_svm_free(s);
    s = out;
done:
    if (rc < 0) {
        px_svm_free(s);
        s = NULL;
    }
    free(all);
    free(used);
    free(cvrows);
    free(fold);
    free(ys);
    free(yu);
    free(xp);
    free(sp);
    px_buf_release(&text);
    return s;
}
