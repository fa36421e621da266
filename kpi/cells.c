/* cells.c: the statistics of the KPI cells (one measure x period x unit): the
 * crude estimate with its interval, O/E with exact/Byar or robust limits, the
 * risk-standardized rate and flag (kpi_cell_stats); empirical-Bayes smoothing
 * and funnel limits across the units of one type in one period
 * (kpi_group_stats); what a crude measure keeps (kpi_crude_cell); the
 * hierarchical standardized ratio of a facility (kpi_hier_cell). */
#include "kpi/internal.h"
#include <gsl/gsl_cdf.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int kpi_cell_cmp(const void *a, const void *b)
{
    const kpi_cell *x = a, *y = b;
    if (x->measure != y->measure) return x->measure - y->measure;
    if (x->kind != y->kind) return x->kind - y->kind;
    int s = strcmp(x->start, y->start);
    if (s) return s;
    if (x->utype != y->utype) return x->utype - y->utype;
    return strcmp(x->unit, y->unit);
}
void kpi_cells_free(kpi_cells *cs)
{
    for (size_t i = 0; i < cs->n; i++) free(cs->v[i].unit);
    free(cs->v);
    memset(cs, 0, sizeof *cs);
}

static int is_rate(int m)
{
    return m == PX_KPI_READMISSION || m == PX_KPI_MORTALITY;
}

/* Crude estimate, O/E, RSR and flag of one cell; sys is its period's system cell. */
void kpi_cell_stats(kpi_cell *x, const kpi_cell *sys, const px_kpi_params *p)
{
    double conf = p->conf;
    px_ci ci;
    x->rate = x->rate_lo = x->rate_hi = x->erate = x->oe = x->oe_lo = x->oe_hi = NAN;
    x->rsr = x->rsr_lo = x->rsr_hi = x->eb = x->ebw = NAN;
    x->fx = x->f95lo = x->f95hi = x->f998lo = x->f998hi = x->phi = x->fvar = NAN;
    x->oe_method = NULL;
    x->flag = x->utype == KPI_U_SYSTEM ? "reference" : "no_different";
    x->suppressed = x->measure != PX_KPI_VOLUME && x->n < p->min_cases;
    if (x->measure == PX_KPI_VOLUME) {
        x->flag = "not_adjusted";
        return;
    }
    if (is_rate(x->measure)) {
        if (px_kpi_wilson(x->o, x->n, conf, &ci) == 0) x->rate = ci.est, x->rate_lo = ci.lo, x->rate_hi = ci.hi;
    } else if (px_kpi_mean_t(x->n, x->o, x->syy, conf, &ci) == 0) {
        x->rate = ci.est, x->rate_lo = ci.lo, x->rate_hi = ci.hi;
    } else if (x->n > 0) {
        x->rate = x->o / x->n;
    }
    if (x->measure == PX_KPI_COST) {
        x->flag = x->utype == KPI_U_SYSTEM ? "reference" : "not_adjusted";
        return;
    }
    if (x->n > 0) x->erate = x->e / x->n;
    px_kpi_ci_method cm;
    int ok = is_rate(x->measure) ? px_kpi_oe(x->o, x->e, conf, p->byar_min_events, &ci, &cm) == 0
                                 : px_kpi_ratio_robust(x->n, x->o, x->e, x->syy, x->sye, x->see, conf, &ci) == 0;
    if (ok) {
        x->oe = ci.est, x->oe_lo = ci.lo, x->oe_hi = ci.hi;
        x->oe_method = is_rate(x->measure) ? px_kpi_ci_method_name(cm) : "robust-log";
        double ref = sys ? sys->rate : NAN;   /* the system's crude rate (or mean) */
        x->rsr = x->oe * ref, x->rsr_lo = x->oe_lo * ref, x->rsr_hi = x->oe_hi * ref;
        if (x->utype != KPI_U_SYSTEM) x->flag = px_kpi_flag(x->oe_lo, x->oe_hi);
    }
    if (x->suppressed && x->utype != KPI_U_SYSTEM) x->flag = "suppressed";
}

/* A crude measure's cell (no usable risk model): the crude rate and its interval
 * stay; no expected count and nothing derived from it (O/E, RSR, EB, funnel). */
void kpi_crude_cell(kpi_cell *x)
{
    x->e = x->erate = x->oe = x->oe_lo = x->oe_hi = NAN;
    x->rsr = x->rsr_lo = x->rsr_hi = x->eb = x->ebw = NAN;
    x->fx = x->f95lo = x->f95hi = x->f998lo = x->f998hi = x->phi = x->fvar = NAN;
    x->oe_method = NULL;
    /* nor a hierarchical ratio: the stored random-intercept model belongs to the
     * same version that failed its gates (or there is none) */
    x->sr = x->sr_lo = x->sr_hi = x->srsr = x->srsr_lo = x->srsr_hi = NAN;
    x->adjustment = "none";
    x->oe_flag = NULL;
    if (x->utype != KPI_U_SYSTEM && !x->suppressed) x->flag = "not_adjusted";
}

const char *kpi_crude_method_words(px_kpi_measure m)
{
    return m == PX_KPI_LOS ? "crude mean with Student t interval; NOT risk-adjusted: no risk model passed its quality "
                             "gates (see kpi.runs.method los_adjustment); no expected days, O/E or flag"
                           : "crude rate with Wilson score interval; NOT risk-adjusted: no risk model passed its quality "
                             "gates (see kpi.runs.method <measure>_adjustment); no expected count, O/E or flag";
}

/* EB smoothing and funnel limits across the units of one type in one period. */
int kpi_group_stats(kpi_cell *g, size_t k, const kpi_cell *sys, const px_kpi_params *p)
{
    if (k == 0 || !sys || g[0].measure == PX_KPI_VOLUME || g[0].measure == PX_KPI_COST) return 0;
    int rate = is_rate(g[0].measure);
    double ref = sys->rate;
    double *r = malloc(k * sizeof *r), *v = malloc(k * sizeof *v), *sm = malloc(k * sizeof *sm),
           *w = malloc(k * sizeof *w), *z = malloc(k * sizeof *z);
    int rc = 0;
    if (!r || !v || !sm || !w || !z) {
        rc = PX_ENOMEM;
        goto out;
    }
    /* LOS funnel: the system's per-stay residual variance on the O/E scale,
     * sum (y - e)^2 / n / ebar^2 (from the system cell's sums) */
    double fvar = rate ? NAN : px_kpi_los_funnel_var(sys->n, sys->e, sys->syy, sys->sye, sys->see);
    for (size_t i = 0; i < k; i++) {
        kpi_cell *x = &g[i];
        r[i] = x->rsr;
        /* noise variance of the risk-standardized rate: binary measures use the
         * model's own Bernoulli variance sum p(1-p) (as AHRQ does), LOS the robust one */
        v[i] = rate ? px_kpi_eb_var_binary(ref, x->vpq, x->e) : px_kpi_eb_var_ratio(ref, x->oe, x->oe_hi, p->conf);
        /* z-scores for the over-dispersion factor: units with enough cases only */
        z[i] = NAN;
        if (x->n >= p->min_cases && isfinite(x->oe)) {
            if (rate && x->e > 0) z[i] = (x->o - x->e) / sqrt(x->e);
            if (!rate && fvar > 0) z[i] = (x->oe - 1) / sqrt(fvar / x->n);
        }
    }
    px_kpi_eb_smooth(r, v, k, ref, sm, w, NULL);
    double phi = 1;
    if (p->overdispersion) {
        double f = px_kpi_overdispersion(z, k, 0.10);
        if (f > 1) phi = f;
    }
    for (size_t i = 0; i < k; i++) {
        kpi_cell *x = &g[i];
        x->eb = sm[i], x->ebw = w[i], x->phi = phi;
        if (rate && x->e > 0) {
            x->fx = x->e;
            px_kpi_funnel_oe(x->e, 0.95, phi, &x->f95lo, &x->f95hi);
            px_kpi_funnel_oe(x->e, 0.998, phi, &x->f998lo, &x->f998hi);
        } else if (!rate && x->n > 0 && isfinite(fvar)) {
            x->fx = x->n;
            x->fvar = fvar;
            px_kpi_funnel_normal(x->n, 1, fvar, 0.95, phi, &x->f95lo, &x->f95hi);
            px_kpi_funnel_normal(x->n, 1, fvar, 0.998, phi, &x->f998lo, &x->f998hi);
        }
    }
out:
    free(r), free(v), free(sm), free(w), free(z);
    return rc;
}
/* The method columns of a cell, and for a facility of a risk-adjusted measure
 * whose model holds a hierarchical model: its standardized ratio, the
 * risk-standardized rate (sr x the system's crude rate) and the flag from the
 * sr interval (the O/E flag is kept in oe_flag). */
void kpi_cell_hier(kpi_cell *x, const kpi_cell *sys, const kpi_hier *hier)
{
    x->sr = x->sr_lo = x->sr_hi = x->srsr = x->srsr_lo = x->srsr_hi = NAN;
    x->oe_flag = NULL;
    int risk = x->measure == PX_KPI_READMISSION || x->measure == PX_KPI_MORTALITY || x->measure == PX_KPI_LOS;
    if (!risk) {
        x->adjustment = "none";
        return;
    }
    x->oe_flag = x->flag;
    x->adjustment = "indirect";   /* system headline and departments: O/E with the pooled model */
    if (x->utype != KPI_U_FACILITY) return;
    const kpi_hier *h = &hier[x->measure == PX_KPI_READMISSION ? 0 : x->measure == PX_KPI_MORTALITY ? 1 : 2];
    if (!h->available) return;
    int i = kpi_hier_find(h, x->kind, x->start, x->unit);
    if (i < 0) return;
    const kpi_hier_cell *hc = &h->cells[i];
    double ref = sys ? sys->rate : NAN;
    x->adjustment = "hierarchical";
    x->sr = hc->sr, x->sr_lo = hc->lo, x->sr_hi = hc->hi;
    x->srsr = hc->sr * ref, x->srsr_lo = hc->lo * ref, x->srsr_hi = hc->hi * ref;
    if (!x->suppressed) x->flag = px_kpi_flag(hc->lo, hc->hi);
}

