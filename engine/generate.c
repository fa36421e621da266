/* generate.c: the synthetic data generator behind `prognos generate`. Simulates
 * each patient's timeline of stays from fixed models with planted facility effects
 * and writes canonical CSV plus truth.json. One RNG stream per patient, no clock or
 * locale in the output: same parameters, same bytes. Models: engine/GENERATOR.md.
 * The tables, draws, files, CSV rows and truth.json are in gen_*.c (gen_internal.h). */
#include "engine/gen_internal.h"
#include <limits.h>
#include <stdlib.h>
#include <time.h>

/* ---- facilities and providers (RNG stream 0) ---- */

/* Number of planted-worse (and of planted-better) facilities. */
static int planted_per_side(int k) { return k >= 10 ? k / 10 : (k >= 3 ? 1 : 0); }

static int facilities_plant(gen *g, gen_rng *r, double median)
{
    int k = g->par->facilities, ncand = 0, *cand = malloc((size_t)k * sizeof *cand);
    if (!cand) return PX_ENOMEM;
    for (int f = 0; f < k; f++)
        if (g->fac[f].weight >= median) cand[ncand++] = f;
    for (int i = ncand - 1; i > 0; i--) {  /* Fisher-Yates */
        int j = rng_int(r, 0, i), t = cand[i];
        cand[i] = cand[j];
        cand[j] = t;
    }
    int side = planted_per_side(k);
    for (int i = 0; i < 2 * side && i < ncand; i++) {
        facility *fa = &g->fac[cand[i]];
        fa->planted = i < side ? 1 : -1;
        for (int m = 0; m < M__COUNT; m++) {  /* whole hundredths: exactly what truth.json says */
            int lo = (int)llround(gen_models[m].planted_lo * 100.0), hi = (int)llround(gen_models[m].planted_hi * 100.0);
            fa->eff[m] = fa->planted * rng_int(r, lo, hi) / 100.0;
        }
    }
    free(cand);
    return 0;
}

static void facilities_describe(gen *g, gen_rng *r, double p10, double wmax)
{
    int k = g->par->facilities;
    for (int f = 0; f < k; f++) {
        facility *fa = &g->fac[f];
        snprintf(fa->id, sizeof fa->id, "H%03d", f + 1);
        fa->critical_access = k >= 10 && fa->weight < p10 && !fa->planted;
        const char *city = gen_cities[f % N_CITIES];
        int campus = f / N_CITIES;
        char suffix[32] = "";
        if (campus) snprintf(suffix, sizeof suffix, " Campus %d", campus + 1);
        snprintf(fa->name, sizeof fa->name, "%s %s%s", city,
                 fa->critical_access ? "Community Hospital" : gen_fac_suffix[rng_int(r, 0, N_FAC_SUFFIX - 1)],
                 suffix);
        fa->beds = fa->critical_access ? rng_int(r, 10, 25)
                                       : 50 + (int)llround(650.0 * fa->weight / wmax) + rng_int(r, 0, 40);
    }
}

/* Providers of facilities from..to-1 (g->prov allocated for all of them). */
static void providers_setup(gen *g, gen_rng *r, int from, int to)
{
    for (int i = from * GEN_PROV_PER_FAC; i < to * GEN_PROV_PER_FAC; i++) {
        provider *pv = &g->prov[i];
        gen_npi_make((uint64_t)i, pv->npi);
        pv->fac = i / GEN_PROV_PER_FAC;
        pv->slot = i % GEN_PROV_PER_FAC;
        pv->first = rng_int(r, 0, 2 * N_FIRST_F - 1);  /* both lists */
        pv->last = rng_int(r, 0, N_LAST_NAMES - 1);
    }
}

/* The long tail (--small-facilities): drawn from their own stream after the
 * regular ones, so that the regular facilities, providers and patients come out
 * the same with or without them. Volume weight 0: only their own patient goes
 * there (see stay_draw), so each holds 1..GEN_SMALL_MAX_STAYS stays. */
static void small_facilities_setup(gen *g)
{
    gen_rng r;
    gen_rng_seed(&r, g->par->seed, SMALL_STREAM);
    for (int f = g->par->facilities; f < g->nfac; f++) {
        facility *fa = &g->fac[f];
        fa->weight = 0.0;
        fa->case_mix = (double)llround(4.0 * gen_normal(&r) * 10.0) / 10.0;
        fa->state = rng_int(&r, 0, N_STATES - 1);
        fa->critical_access = 1;
        fa->beds = rng_int(&r, 4, 25);
        snprintf(fa->id, sizeof fa->id, "H%03d", f + 1);
        snprintf(fa->name, sizeof fa->name, "%s Rural Health Center %d", gen_cities[f % N_CITIES],
                 f - g->par->facilities + 1);
    }
    providers_setup(g, &r, g->par->facilities, g->nfac);
}

static int facilities_setup(gen *g)
{
    int k = g->par->facilities;
    gen_rng r;
    gen_rng_seed(&r, g->par->seed, 0);
    g->fac = calloc((size_t)g->nfac, sizeof *g->fac);
    g->fac_cum = calloc((size_t)k, sizeof *g->fac_cum);
    g->nprov = g->nfac * GEN_PROV_PER_FAC;
    g->prov = calloc((size_t)g->nprov, sizeof *g->prov);
    double *sorted = calloc((size_t)k, sizeof *sorted);
    if (!g->fac || !g->fac_cum || !g->prov || !sorted) {
        free(sorted);
        return PX_ENOMEM;
    }
    double wmax = 0.0;
    for (int f = 0; f < k; f++) {
        facility *fa = &g->fac[f];
        fa->weight = exp(0.8 * gen_normal(&r));
        fa->case_mix = (double)llround(4.0 * gen_normal(&r) * 10.0) / 10.0;
        fa->state = rng_int(&r, 0, N_STATES - 1);
        sorted[f] = fa->weight;
        if (fa->weight > wmax) wmax = fa->weight;
    }
    qsort(sorted, (size_t)k, sizeof *sorted, px_cmp_double);
    double median = sorted[k / 2], p10 = sorted[k / 10];
    free(sorted);
    if (facilities_plant(g, &r, median) < 0) return PX_ENOMEM;
    facilities_describe(g, &r, p10, wmax);
    double cum = 0.0;
    for (int f = 0; f < k; f++) g->fac_cum[f] = cum += g->fac[f].weight;
    providers_setup(g, &r, 0, k);
    small_facilities_setup(g);
    return 0;
}


/* ---- patients ---- */

static int pick_facility(const gen *g, gen_rng *r)  /* by volume weight: binary search */
{
    int k = g->par->facilities, lo = 0, hi = k - 1;
    double u = rng_unif(r) * g->fac_cum[k - 1];
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (u < g->fac_cum[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static void patient_draw(const gen *g, gen_rng *r, patient *pt)
{
    int span = g->par->end_year - g->par->start_year;
    int picked = pick_facility(g, r);
    if (!pt->small_cap) pt->home_fac = picked;  /* else set by the caller: its small facility */
    pt->female = rng_bern(r, 0.52);
    double age = 18.0 + 82.0 * gen_beta(r, 3.6, 3.0) + g->fac[pt->home_fac].case_mix;
    double age_max = 110 - span < 100 ? 110 - span : 100;
    pt->age_ref = (int)floor(age < 18.0 ? 18.0 : age > age_max ? age_max : age);
    pt->birth_year = g->par->start_year - pt->age_ref;
    int jan1 = px_days_from_civil(pt->birth_year, 1, 1);
    pt->birth = jan1 + rng_int(r, 0, px_days_from_civil(pt->birth_year + 1, 1, 1) - jan1 - 1);
    double age10 = (pt->age_ref - 65) / 10.0;
    int ncm = 0;
    pt->cm = 0;
    for (int c = 0; c < CM__COUNT; c++) {
        pt->cm_code[c] = -1;
        if (!rng_bern(r, logistic(gen_comorbs[c].prev_a + gen_comorbs[c].prev_b * age10))) continue;
        pt->cm |= 1u << c;
        pt->cm_code[c] = rng_int(r, 0, (pt->female ? g->ncode[c] : gen_comorbs[c].nmale) - 1);
        ncm++;
    }
    double rate = RATE_BASE * exp(RATE_AGE * age10 + RATE_CM * ncm) *
                  gen_gamma(r, RATE_FRAILTY_SHAPE) / RATE_FRAILTY_SHAPE;
    pt->rate = rate < RATE_FLOOR ? RATE_FLOOR : rate > RATE_CAP ? RATE_CAP : rate;
    pt->first = pt->female ? rng_int(r, 0, N_FIRST_F - 1)
                           : N_FIRST_F + rng_int(r, 0, N_FIRST_M - 1);
    pt->last = rng_int(r, 0, N_LAST_NAMES - 1);
    pt->zip_state = rng_bern(r, 0.9) ? g->fac[pt->home_fac].state : rng_int(r, 0, N_STATES - 1);
    pt->zip_tail = rng_int(r, 0, 99);
    pt->death = INT_MIN;
}

/* ---- one stay: department, principal diagnosis, admission, models ---- */


static void stay_department(const gen *g, gen_rng *r, const patient *pt, stay *s)
{
    double w[D__COUNT];
    for (int d = 0; d < D__COUNT; d++) w[d] = gen_depts[d].base_weight;
    w[D_CARDIOLOGY] += 20.0 * has_cm(pt, CM_CHF);
    w[D_ONCOLOGY] += 25.0 * has_cm(pt, CM_CANCER);
    w[D_NEUROLOGY] += 8.0 * has_cm(pt, CM_DEMENTIA);
    w[D_PULMONOLOGY] += 18.0 * has_cm(pt, CM_COPD);
    s->dept = gen_pick(r, w, D__COUNT);
    /* principal: the exacerbation of one of the patient's comorbidities, or a neutral code */
    int cand[CM__COUNT], n = 0;
    for (int c = 0; c < CM__COUNT; c++)
        if (has_cm(pt, c) && gen_comorbs[c].dept == s->dept) cand[n++] = c;
    s->pcm = -1;
    if (n && rng_bern(r, s->dept == D_ONCOLOGY ? 0.4 : 0.5)) s->pcm = cand[rng_int(r, 0, n - 1)];
    else s->pidx = rng_int(r, 0, g->ndx[s->dept] - 1);
}

static void stay_admission(gen_rng *r, stay *s)
{
    static const double readm_w[AT__COUNT] = {0.85, 0.12, 0.03}, surg_w[AT__COUNT] = {0.40, 0.15, 0.45},
                        med_w[AT__COUNT] = {0.70, 0.20, 0.10};
    static const double src_w[AT__COUNT][AS__COUNT] = {
        {0.88, 0.00, 0.00, 0.05, 0.04, 0.03},
        {0.35, 0.40, 0.15, 0.05, 0.00, 0.05},
        {0.00, 0.70, 0.28, 0.00, 0.00, 0.02}};
    s->type = gen_pick(r, s->readmit_in ? readm_w : gen_depts[s->dept].surgical ? surg_w : med_w, AT__COUNT);
    s->src = gen_pick(r, src_w[s->type], AS__COUNT);
}

static void stay_models(const gen *g, const patient *pt, stay *s)
{
    double x[X__COUNT];
    x[X_AGE] = (year_of(s->adm) - pt->birth_year - 65) / 10.0;
    x[X_FEMALE] = pt->female;
    for (int c = 0; c < CM__COUNT; c++) x[X_CM0 + c] = has_cm(pt, c);
    x[X_PRIOR] = s->prior;
    x[X_EMERGENCY] = s->type == AT_EMERGENCY;
    for (int m = 0; m < M__COUNT; m++) {
        double eta = gen_models[m].intercept;
        for (int j = 0; j < X__COUNT; j++) eta += gen_models[m].beta[j] * x[j];
        double eta_f = eta + g->fac[s->fac].eff[m];
        s->p0[m] = m == M_LOS ? exp(eta) : logistic(eta);
        s->p[m] = m == M_LOS ? exp(eta_f) : logistic(eta_f);
    }
}

/* The same law whether or not the patient dies after discharge: a disposition that
 * foretold the death would tell the readmission model more than its covariates
 * (a death after discharge means no readmission), and it is one of its features. */
static int disposition_alive(gen_rng *r, const patient *pt, const stay *s)
{
    double w[DS__COUNT] = {0};
    double age10 = (year_of(s->adm) - pt->birth_year - 65) / 10.0;
    w[DS_HOME_HEALTH] = 0.15;
    w[DS_SNF] = 0.06 + 0.05 * (age10 + 1.5 > 0.0 ? age10 + 1.5 : 0.0);
    w[DS_REHAB] = s->dept == D_ORTHOPEDICS ? 0.15 : 0.03;
    w[DS_TRANSFER] = 0.02, w[DS_AMA] = 0.01, w[DS_HOSPICE] = 0.005;
    w[DS_LONG_TERM] = 0.005, w[DS_OTHER] = 0.005;
    double rest = 1.0;
    for (int d = 0; d < DS__COUNT; d++) rest -= w[d];
    w[DS_HOME] = rest > 0.05 ? rest : 0.05;
    return gen_pick(r, w, DS__COUNT);
}

static void stay_cost(const gen *g, gen_rng *r, stay *s)
{
    int slot = gen_dept_slot[s->dept];
    if (slot < 0) slot = (int[]){0, 1, 8, 9}[rng_int(r, 0, 3)];
    s->prov = s->fac * GEN_PROV_PER_FAC + slot;
    long n = gen_poisson(r, gen_depts[s->dept].px_mean) + gen_depts[s->dept].surgical;
    s->nproc = n < g->npx[s->dept] ? (int)n : g->npx[s->dept];
    double cost = gen_depts[s->dept].cost_per_day * pow(s->dis - s->adm + 1.0, 0.85) *
                  exp(0.45 * gen_normal(r)) * (1.0 + 0.25 * s->nproc);
    s->cost = cost < 250.0 ? 250.0 : cost > 1e7 ? 1e7 : cost;
}

/* ---- the timeline ---- */

static int prior_admissions(const gen *g, int n, int t)
{
    int count = 0;
    for (int j = 0; j < n; j++) count += g->stays[j].adm >= t - 365;
    return count < PRIOR_CAP ? count : PRIOR_CAP;
}

/* Share of the death days lo..MORT_WINDOW (uniform) that fall after a planned
 * stay of los days, i.e. on which the patient would be discharged alive. */
static double after_discharge_share(int los, int lo)
{
    int last_in = los > lo - 1 ? los : lo - 1, after = MORT_WINDOW - last_in;
    return after > 0 ? (double)after / (double)(MORT_WINDOW + 1 - lo) : 0.0;
}

/* Draws the stay starting on day t; returns 1 when the patient dies within
 * MORT_WINDOW days of admission. Three models hold exactly on the populations the
 * feature sets use (engine/GENERATOR.md, "Outcomes and populations"):
 * - mortality: died ~ Bernoulli(p_mort), independent of everything drawn after
 *   the admission; the death day is uniform lo..30 after admission;
 * - LOS on the stays discharged alive: a death on or before the planned discharge
 *   ends the stay ('expired'), so short planned stays survive more often. The
 *   planned LOS L is drawn from f(L) / P(discharged alive | L) by rejection
 *   (accept with probability (1 - p) / P(discharged alive | L) <= 1), so that
 *   among the stays discharged alive L follows f exactly: E[los_days] = mu;
 * - readmission: a death after discharge allows no readmission, so on the other
 *   stays discharged alive the draw is boosted by 1 / P(no death after discharge),
 *   which makes P(readmitted | everything known at discharge) = p_readm. */
static int stay_draw(gen *g, gen_rng *r, patient *pt, int n, int prev_fac)
{
    stay *s = &g->stays[n];
    int t = s->adm;
    if (s->readmit_in && rng_bern(r, 0.7)) s->fac = prev_fac;
    else s->fac = rng_bern(r, 0.85) ? pt->home_fac : pick_facility(g, r);
    if (pt->small_cap) s->fac = n < pt->small_cap ? pt->home_fac : pick_facility(g, r);
    stay_department(g, r, pt, s);
    stay_admission(r, s);
    s->prior = prior_admissions(g, n, t);
    stay_models(g, pt, s);
    /* no death within MORT_WINDOW days of an earlier admission: those drew "survived" */
    int lo = n ? g->stays[n - 1].adm + MORT_WINDOW + 1 - t : 0;
    if (lo < 0) lo = 0;
    double pm = s->p[M_MORT], mean = s->p[M_LOS] - 1.0;
    int planned;
    for (;;) {
        long los = 1 + gen_negbin(r, mean > 0.0 ? mean : 0.0, LOS_NB_SIZE);
        planned = los < GEN_LOS_MAX ? (int)los : GEN_LOS_MAX;
        s->alive = (1.0 - pm) / ((1.0 - pm) + pm * after_discharge_share(planned, lo));
        if (!(s->alive > 1e-9) || rng_unif(r) < s->alive) break;  /* guard: p_mort never nears 1 here */
    }
    int dies = rng_bern(r, pm);
    s->dis = t + planned;
    s->q_clamped = 0;
    if (dies) {
        pt->death = t + rng_int(r, lo, MORT_WINDOW);
        if (pt->death <= s->dis) {
            s->dis = pt->death;
            s->disp = DS_EXPIRED;
        } else {
            s->disp = disposition_alive(r, pt, s);
        }
    } else {
        s->disp = disposition_alive(r, pt, s);
    }
    stay_cost(g, r, s);
    return dies;
}

/* First admission: exponential waiting time at the patient's rate, truncated to
 * the period, so every patient has at least one stay. */
static int first_admission(const gen *g, gen_rng *r, const patient *pt)
{
    double span = g->end_day - g->start_day + 1, rate = pt->rate / 365.0;
    double x = -log1p(-rng_unif(r) * -expm1(-rate * span)) / rate;
    int d = (int)floor(x);
    return g->start_day + (d < 0 ? 0 : d >= span ? (int)span - 1 : d);
}

static int timeline(gen *g, gen_rng *r, patient *pt)
{
    int t = first_admission(g, r, pt), n = 0, readmit = 0, prev_fac = -1;
    while (t <= g->end_day) {
        if (n == GEN_MAX_STAYS) {
            g->n_capped++;
            break;
        }
        stay *s = &g->stays[n];
        s->adm = t;
        s->readmit_in = readmit;
        int dies = stay_draw(g, r, pt, n, prev_fac);
        n++;
        if (dies) break;
        double q = s->p[M_READM] / s->alive;  /* see stay_draw */
        s->q_clamped = q > 1.0;
        readmit = rng_bern(r, q) && s->disp != DS_TRANSFER;
        double gap = readmit ? rng_int(r, 1, 30) : 31.0 + floor(rng_exp(r) * 365.0 / pt->rate);
        if (s->dis + gap > g->end_day) break;
        t = s->dis + (int)gap;
        prev_fac = s->fac;
    }
    return n;
}

/* ---- entry points ---- */

px_gen_params px_gen_default_params(void)
{
    px_gen_params p = {.patients = 10000, .seed = 1, .out_dir = NULL, .facilities = 40,
                       .start_year = 2019, .end_year = 2023, .small_facilities = 0};
    return p;
}

/* The output never depends on today; only this check does: every date must
 * be in the past, and a stay admitted on the last day may last 365 days. */
static int params_check(const px_gen_params *p, px_err *e)
{
    if (!p->out_dir || !*p->out_dir) return px_err_set(e, PX_EINVAL, "no output directory given");
    if (p->patients < 1 || p->patients > GEN_MAX_PATIENTS)
        return px_err_set(e, PX_EINVAL, "number of patients must be 1-%lld, not %lld", GEN_MAX_PATIENTS,
                          p->patients);
    if (p->facilities < 1 || p->facilities > GEN_MAX_FACILITIES)
        return px_err_set(e, PX_EINVAL, "number of facilities must be 1-%d, not %d", GEN_MAX_FACILITIES,
                          p->facilities);
    if (p->small_facilities < 0 || p->small_facilities > GEN_MAX_SMALL_FACILITIES)
        return px_err_set(e, PX_EINVAL, "number of small facilities must be 0-%d, not %d", GEN_MAX_SMALL_FACILITIES,
                          p->small_facilities);
    if (p->start_year < 1900 || p->end_year < p->start_year || p->end_year - p->start_year > GEN_MAX_SPAN_YEARS)
        return px_err_set(e, PX_EINVAL, "invalid admission years %d-%d", p->start_year, p->end_year);
    int today = (int)(time(NULL) / 86400), last_ok = p->end_year;
    if (px_days_from_civil(p->end_year, 12, 31) + GEN_LOS_MAX < today) return 0;
    while (last_ok > 1900 && px_days_from_civil(last_ok, 12, 31) + GEN_LOS_MAX >= today) last_ok--;
    px_err_set(e, PX_EINVAL, "admission years %d-%d reach into the future", p->start_year, p->end_year);
    px_err_detail(e, "a stay admitted in %d may end up to %d days later, after today", p->end_year, GEN_LOS_MAX);
    px_err_hint(e, "end the admission years in %d or earlier", last_ok);
    return PX_EINVAL;
}

static int gen_setup(gen *g, const px_gen_params *p, px_err *e)
{
    g->par = p;
    g->nfac = p->facilities + p->small_facilities;
    g->start_day = px_days_from_civil(p->start_year, 1, 1);
    g->end_day = px_days_from_civil(p->end_year, 12, 31);
    for (int d = 0; d < D__COUNT; d++) {
        while (gen_depts[d].dx[g->ndx[d]].code) g->ndx[d]++;
        while (gen_depts[d].px[g->npx[d]]) g->npx[d]++;
    }
    for (int c = 0; c < CM__COUNT; c++)
        while (gen_comorbs[c].codes[g->ncode[c]].code) g->ncode[c]++;
    int rc = gen_layout_build(g, e);
    if (rc < 0) return rc;
    if (facilities_setup(g) < 0 || !(g->fs = calloc((size_t)g->nfac, sizeof *g->fs)))
        return px_err_set(e, PX_ENOMEM, "out of memory");
    return px_mkdir_p(p->out_dir, 0777, e);
}

static void gen_release(gen *g)
{
    free(g->fac);
    free(g->fac_cum);
    free(g->prov);
    free(g->fs);
    free(g->auc[0].v);
    free(g->auc[1].v);
}

static int gen_run(gen *g, px_err *e)
{
    for (int t = 0; t < PX_TAB__COUNT; t++) gen_emit_header(g, t);
    gen_emit_facilities(g);
    long long total = g->par->patients + g->par->small_facilities;
    g->data_end = INT_MIN;
    for (long long i = 0; i < total; i++) {
        gen_rng r;
        patient pt = {.idx = i};
        gen_rng_seed(&r, g->par->seed, (uint64_t)i + 1);
        /* after the regular patients: one patient per small facility, whose first
         * 1..GEN_SMALL_MAX_STAYS stays are there */
        long long small = i - g->par->patients;
        if (small >= 0) {
            pt.small_cap = rng_int(&r, 1, GEN_SMALL_MAX_STAYS);
            pt.home_fac = g->par->facilities + (int)small;
        }
        patient_draw(g, &r, &pt);
        int n = timeline(g, &r, &pt);
        gen_account(g, &pt, n);
        gen_emit_patient(g, &r, &pt, n);
        if ((i & 4095) == 4095 && (g->oom || gen_outs_error(g, e) < 0)) break;
    }
    if (g->oom) return px_err_set(e, PX_ENOMEM, "out of memory");
    int rc = gen_outs_error(g, e);
    if (rc < 0) return rc;
    if (gen_population_finish(g, M_READM) < 0 || gen_population_finish(g, M_MORT) < 0)
        return px_err_set(e, PX_ENOMEM, "out of memory");
    gen_truth_write(g, &g->out[PX_TAB__COUNT]);
    return 0;
}

int px_generate(const px_gen_params *p, px_gen_result *r, px_err *e)
{
    int rc = params_check(p, e);
    if (rc < 0) return rc;
    gen *g = calloc(1, sizeof *g);
    if (!g) return px_err_set(e, PX_ENOMEM, "out of memory");
    rc = gen_setup(g, p, e);
    if (rc == 0) rc = gen_outs_open(g, e);
    if (rc == 0) rc = gen_run(g, e);
    rc = gen_outs_close(g, rc, e);
    if (rc == 0 && r) {
        r->patients = p->patients + p->small_facilities, r->encounters = g->n_enc, r->diagnoses = g->n_dx;
        r->procedures = g->n_px, r->facilities = g->nfac, r->providers = g->nprov;
    }
    gen_release(g);
    free(g);
    return rc;
}
