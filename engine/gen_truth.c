/* gen_truth.c: the generator's truth: each model's population counted from the
 * emitted data as the warehouse and features/sql would count it (observed and
 * expected per facility, the AUC of the true p) and written as truth.json with a
 * small locale-free JSON writer. */
#include "engine/gen_internal.h"
#include <limits.h>
#include <stdlib.h>

/* ---- outcomes, computed from the emitted data as the warehouse would ---- */

static void pyvec_push(gen *g, pyvec *v, py e)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 65536;
        py *nv = realloc(v->v, cap * sizeof *nv);
        if (!nv) {
            g->oom = 1;
            return;
        }
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = e;
}

/* Adds one stay to model m's population; value is the outcome (0/1, or LOS days). */
static void account_one(gen *g, fac_stats *fs, int m, double p, double p0, int value)
{
    fs->n[m]++;
    fs->obs[m] += value;
    fs->exp[m] += p;
    fs->exp0[m] += p0;
    g->sum_p[m] += p;
}

/* The populations of features/sql: mortality all stays, LOS the stays discharged
 * alive, readmission the stays discharged alive but not transfer_acute or ama.
 * The follow-up rule (prediction day + 30 <= the data's last admission day) of
 * mortality and readmission waits for that day: see population_finish. */
void gen_account(gen *g, const patient *pt, int n)
{
    for (int k = 0; k < n; k++) {
        const stay *s = &g->stays[k];
        fac_stats *fs = &g->fs[s->fac];
        fs->stays++;
        if (s->adm > g->data_end) g->data_end = s->adm;
        int dd = pt->death == INT_MIN ? -1 : pt->death - s->adm;
        int mort = dd >= 0 && dd <= MORT_WINDOW;
        pyvec_push(g, &g->auc[1], (py){s->p[M_MORT], s->p0[M_MORT], mort, s->adm, s->fac});
        if (s->disp == DS_EXPIRED) continue;
        account_one(g, fs, M_LOS, s->p[M_LOS], s->p0[M_LOS], s->dis - s->adm);
        if (s->disp != DS_TRANSFER && s->disp != DS_AMA) {
            int readm = k + 1 < n && g->stays[k + 1].adm - s->dis <= FOLLOW_UP;
            pyvec_push(g, &g->auc[0], (py){s->p[M_READM], s->p0[M_READM], readm | s->q_clamped << 1, s->dis, s->fac});
        }
    }
    g->n_deaths += pt->death != INT_MIN;
    for (int c = 0; c < CM__COUNT; c++) g->cm_patients[c] += has_cm(pt, c);
}

/* ---- truth.json ---- */

static int py_cmp(const void *a, const void *b)
{
    double x = ((const py *)a)->p, y = ((const py *)b)->p;
    return (x > y) - (x < y);
}

static int int_cmp(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Mann-Whitney AUC of p against y over v[0..n) (sorted here), ties given
 * mid-ranks (the rank-sum form of the ROC area, ties counting one half). NaN
 * when either class is empty. */
static double auc_rank(py *v, size_t n)
{
    qsort(v, n, sizeof *v, py_cmp);
    double rank_sum = 0.0, n1 = 0.0;
    for (size_t i = 0, j; i < n; i = j) {
        double pos = 0.0;
        for (j = i; j < n && v[j].p == v[i].p; j++) pos += v[j].y;
        rank_sum += pos * ((double)(i + 1) + (double)j) / 2.0;
        n1 += pos;
    }
    double n0 = (double)n - n1;
    if (n1 == 0.0 || n0 == 0.0) return NAN;
    return (rank_sum - n1 * (n1 + 1.0) / 2.0) / (n1 * n0);
}

/* Once the data's last admission day is known: keeps the stays of a logistic
 * model's population with FOLLOW_UP days of follow-up (prediction day + 30 <=
 * that day, as features/sql), adds them to the facility counts, and computes the
 * AUC of the true p over the population and over its temporal holdout: the
 * stays whose prediction day is on or after the day at position
 * floor(n * (1 - 0.25)) of the sorted days (registry/train.c's rule; train.c also
 * keeps only a keyed 30% of the patients, which the generator cannot know, and
 * which is a random subset independent of the outcomes). Returns -1 on ENOMEM. */
int gen_population_finish(gen *g, int m)
{
    int i2 = m == M_READM ? 0 : 1;
    pyvec *v = &g->auc[i2];
    size_t n = 0;
    for (size_t i = 0; i < v->n; i++) {
        py e = v->v[i];
        if (e.day + FOLLOW_UP > g->data_end) continue;
        g->n_q_clamped += e.y >> 1;
        e.y &= 1;
        account_one(g, &g->fs[e.fac], m, e.p, e.p0, e.y);
        v->v[n++] = e;
    }
    v->n = n;
    g->auc_all[i2] = g->auc_hold[i2] = NAN;
    g->hold_from[i2] = g->data_end;
    g->n_hold[i2] = g->ev_hold[i2] = 0;
    if (!n) return 0;
    int *days = malloc(n * sizeof *days);
    py *hold = malloc(n * sizeof *hold);
    if (!days || !hold) {
        free(days);
        free(hold);
        return -1;
    }
    for (size_t i = 0; i < n; i++) days[i] = v->v[i].day;
    qsort(days, n, sizeof *days, int_cmp);
    size_t q = (size_t)floor((double)n * (1.0 - HOLDOUT_TIME_SHARE));
    int cut = days[q < n ? q : n - 1];
    size_t nh = 0;
    for (size_t i = 0; i < n; i++)
        if (v->v[i].day >= cut) hold[nh++] = v->v[i], g->ev_hold[i2] += v->v[i].y;
    g->hold_from[i2] = cut;
    g->n_hold[i2] = (long long)nh;
    g->auc_hold[i2] = auc_rank(hold, nh);
    g->auc_all[i2] = auc_rank(v->v, n);
    free(days);
    free(hold);
    return 0;
}

/* A tiny pretty-printing JSON writer: *first tracks the comma of each level. */
static void j_key(gen_out *o, int ind, const char *key, int *first)
{
    put_s(o, *first ? "\n" : ",\n");
    *first = 0;
    for (int i = 0; i < ind; i++) put_s(o, "  ");
    if (key) {
        gen_put_jstr(o, key);
        put_s(o, ": ");
    }
}
static void j_str(gen_out *o, int ind, const char *key, const char *v, int *first)
{
    j_key(o, ind, key, first);
    if (v) gen_put_jstr(o, v);
    else put_s(o, "null");
}
static void j_int(gen_out *o, int ind, const char *key, long long v, int *first)
{
    j_key(o, ind, key, first);
    gen_put_i(o, v);
}
static void j_num(gen_out *o, int ind, const char *key, double v, int dec, int *first)
{
    j_key(o, ind, key, first);
    gen_put_fixed(o, v, dec);
}
static void j_date(gen_out *o, int ind, const char *key, int days, int *first)
{
    j_key(o, ind, key, first);
    put_c(o, '"');
    gen_put_date(o, days);
    put_c(o, '"');
}
static void j_open(gen_out *o, int ind, const char *key, char brace, int *first)
{
    j_key(o, ind, key, first);
    put_c(o, brace);
}
static void j_close(gen_out *o, int ind, char brace)
{
    put_c(o, '\n');
    for (int i = 0; i < ind; i++) put_s(o, "  ");
    put_c(o, brace);
}

static void truth_head(gen *g, gen_out *o, int *f)
{
    const px_gen_params *p = g->par;
    j_str(o, 1, "format", "prognos-generator-truth", f);
    j_int(o, 1, "format_version", 1, f);
    j_str(o, 1, "generator", "prognos " PX_VERSION " engine/generate.c; documented in engine/GENERATOR.md", f);
    int ff = 1;
    j_open(o, 1, "params", '{', f);
    j_key(o, 2, "seed", &ff);
    gen_put_u(o, p->seed, 1);
    j_int(o, 2, "patients", p->patients, &ff);
    j_int(o, 2, "facilities", p->facilities, &ff);
    j_int(o, 2, "small_facilities", p->small_facilities, &ff);
    j_int(o, 2, "start_year", p->start_year, &ff);
    j_int(o, 2, "end_year", p->end_year, &ff);
    j_close(o, 1, '}');
    ff = 1;
    j_open(o, 1, "period", '{', f);
    j_date(o, 2, "first_admission_date", g->start_day, &ff);
    j_date(o, 2, "last_admission_date", g->end_day, &ff);
    j_date(o, 2, "data_last_admission_date", g->data_end, &ff);
    j_date(o, 2, "readmission_last_index_discharge_date", g->data_end - FOLLOW_UP, &ff);
    j_date(o, 2, "mortality_last_admission_date", g->data_end - FOLLOW_UP, &ff);
    j_close(o, 1, '}');
    ff = 1;
    j_open(o, 1, "counts", '{', f);
    j_int(o, 2, "patients", p->patients + p->small_facilities, &ff);
    j_int(o, 2, "encounters", g->n_enc, &ff);
    j_int(o, 2, "diagnoses", g->n_dx, &ff);
    j_int(o, 2, "procedures", g->n_px, &ff);
    j_int(o, 2, "facilities", g->nfac, &ff);
    j_int(o, 2, "providers", g->nprov, &ff);
    j_int(o, 2, "patients_died", g->n_deaths, &ff);
    j_int(o, 2, "timelines_capped", g->n_capped, &ff);
    j_int(o, 2, "readmission_probability_clamped", g->n_q_clamped, &ff);
    j_close(o, 1, '}');
}

static void truth_comorbidity(gen *g, gen_out *o, int c, int *f)
{
    const gen_comorb *cm = &gen_comorbs[c];
    int ff = 1, fa = 1;
    j_open(o, 2, NULL, '{', f);
    j_str(o, 3, "name", cm->name, &ff);
    j_str(o, 3, "label", cm->label, &ff);
    j_str(o, 3, "quan_2005_charlson", cm->charlson, &ff);
    j_str(o, 3, "quan_2005_elixhauser", cm->elixhauser, &ff);
    j_open(o, 3, "code_prefixes", '[', &ff);
    for (int i = 0; cm->prefixes[i]; i++) j_str(o, 4, NULL, cm->prefixes[i], &fa);
    j_close(o, 3, ']');
    fa = 1;
    j_open(o, 3, "codes", '[', &ff);
    for (int i = 0; i < g->ncode[c]; i++) j_str(o, 4, NULL, cm->codes[i].code, &fa);
    j_close(o, 3, ']');
    if (cm->nmale < g->ncode[c]) j_str(o, 3, "female_only_code", cm->codes[cm->nmale].code, &ff);
    j_num(o, 3, "prevalence_logit_intercept", cm->prev_a, 4, &ff);
    j_num(o, 3, "prevalence_logit_age_ref_per_10y", cm->prev_b, 4, &ff);
    j_int(o, 3, "patients_with", g->cm_patients[c], &ff);
    j_close(o, 2, '}');
}

static void truth_covariates(gen *g, gen_out *o, int *f)
{
    static const char *const def_fixed[] = {
        "(year(admission_date) - year(birth_date) - 65) / 10, a real number; the warehouse keeps only the birth year",
        "1 if patients.sex = 'F', else 0",
        "min(5, number of the same patient's admissions with admission_date in [admission_date - 365, admission_date - 1])",
        "1 if admission_type = 'emergency', else 0"};
    int fa = 1;
    j_open(o, 1, "covariates", '[', f);
    for (int x = 0; x < X__COUNT; x++) {
        int ff = 1;
        j_open(o, 2, NULL, '{', &fa);
        j_str(o, 3, "name", gen_x_names[x], &ff);
        if (x >= X_CM0 && x < X_PRIOR) {
            const gen_comorb *cm = &gen_comorbs[x - X_CM0];
            j_key(o, 3, "definition", &ff);
            put_s(o, "\"1 if any diagnosis code of the stay, dot removed, starts with ");
            for (int i = 0; cm->prefixes[i]; i++) {
                if (i) put_s(o, cm->prefixes[i + 1] ? ", " : " or ");
                put_s(o, cm->prefixes[i]);
            }
            put_s(o, ", else 0; the generator writes the patient's code on every stay, and no other code "
                     "it writes falls in Quan 2005 '");
            put_s(o, cm->charlson);
            put_s(o, "'\"");
        } else {
            j_str(o, 3, "definition", def_fixed[x == X_AGE ? 0 : x == X_FEMALE ? 1 : x == X_PRIOR ? 2 : 3], &ff);
        }
        j_close(o, 2, '}');
    }
    j_close(o, 1, ']');
    fa = 1;
    j_open(o, 1, "comorbidities", '[', f);
    for (int c = 0; c < CM__COUNT; c++) truth_comorbidity(g, o, c, &fa);
    j_close(o, 1, ']');
}

static const struct model_text { const char *form, *model, *outcome, *population; } model_texts[M__COUNT] = {
    {"logistic",
     "P(outcome = 1) = 1 / (1 + exp(-(intercept + sum(coefficients[x] * x) + facility effect)))",
     "readmit_30d of features.readmission: 1 if the same patient has another admission with "
     "1 <= admission_date - discharge_date <= 30 days, else 0; a death after discharge without a readmission "
     "is 0, as in CMS's measures (the generator boosts the other stays' draws so that the model holds)",
     "features.readmission's cohort: stays with discharge_disposition not in ('expired', 'transfer_acute', "
     "'ama') and discharge_date + 30 <= period.data_last_admission_date (deaths after discharge included)"},
    {"logistic",
     "P(outcome = 1) = 1 / (1 + exp(-(intercept + sum(coefficients[x] * x) + facility effect)))",
     "death_30d of features.mortality: 1 if patients.death_date is set and "
     "0 <= death_date - admission_date <= 30 days, else 0",
     "features.mortality's cohort: stays with admission_date + 30 <= period.data_last_admission_date"},
    {"log_linear_count",
     "E[los_days] = mu = exp(intercept + sum(coefficients[x] * x) + facility effect): a Poisson (or "
     "negative binomial) GLM with log link on los_days recovers the coefficients; los_days - 1 ~ "
     "NegBin(mean mu - 1, size), Var = (mu - 1) + (mu - 1)^2 / size, capped at 365 days",
     "los_days of features.los = discharge_date - admission_date",
     "features.los's cohort: stays with discharge_disposition not 'expired' (the planned stay is drawn so "
     "that the law holds exactly among the stays discharged alive)"},
};

static void truth_model(gen *g, gen_out *o, int m, int *f)
{
    const gen_model *md = &gen_models[m];
    long long n = 0;
    double obs = 0.0;
    for (int k = 0; k < g->nfac; k++) n += g->fs[k].n[m], obs += g->fs[k].obs[m];
    int ff = 1, fc = 1, fo = 1;
    j_open(o, 2, md->name, '{', f);
    j_str(o, 3, "form", model_texts[m].form, &ff);
    j_str(o, 3, "model", model_texts[m].model, &ff);
    j_str(o, 3, "outcome", model_texts[m].outcome, &ff);
    j_str(o, 3, "population", model_texts[m].population, &ff);
    j_str(o, 3, "facility_effect", "facilities[].effects for the stay's facility_id (0 when planted = none)", &ff);
    j_num(o, 3, "intercept", md->intercept, 4, &ff);
    j_open(o, 3, "coefficients", '{', &ff);
    for (int x = 0; x < X__COUNT; x++) j_num(o, 4, gen_x_names[x], md->beta[x], 4, &fc);
    j_close(o, 3, '}');
    if (m == M_LOS) j_num(o, 3, "size", LOS_NB_SIZE, 4, &ff);
    j_open(o, 3, "observed", '{', &ff);
    j_int(o, 4, "stays", n, &fo);
    if (m == M_LOS) {
        j_num(o, 4, "mean_los_days", n ? obs / n : NAN, 6, &fo);
        j_num(o, 4, "expected_mean_los_days", n ? g->sum_p[m] / n : NAN, 6, &fo);
    } else {
        j_int(o, 4, "events", (long long)obs, &fo);
        j_num(o, 4, "rate", n ? obs / n : NAN, 6, &fo);
        j_num(o, 4, "expected_rate", n ? g->sum_p[m] / n : NAN, 6, &fo);
        int i2 = m == M_READM ? 0 : 1, fh = 1;
        j_num(o, 4, "auc_true_p", g->auc_all[i2], 6, &fo);
        j_open(o, 4, "holdout", '{', &fo);
        j_str(o, 5, "rule", "registry/train.c's temporal holdout: the stays of the population whose prediction "
              "date (readmission: discharge_date, mortality: admission_date) is on or after the date at position "
              "floor(0.75 * stays) of their sorted dates; train also keeps only its keyed 30% patient group, a "
              "random subset independent of the outcomes, so the AUC of the true p on train's holdout rows "
              "estimates auc_true_p here", &fh);
        j_date(o, 5, "from_date", g->hold_from[i2], &fh);
        j_int(o, 5, "stays", g->n_hold[i2], &fh);
        j_int(o, 5, "events", g->ev_hold[i2], &fh);
        j_num(o, 5, "auc_true_p", g->auc_hold[i2], 6, &fh);
        j_close(o, 4, '}');
    }
    j_close(o, 3, '}');
    j_close(o, 2, '}');
}

static void truth_facility(gen *g, gen_out *o, int k, int *f)
{
    static const char *const mkey[M__COUNT] = {"readmission", "mortality", "los"};
    const facility *fa = &g->fac[k];
    const fac_stats *s = &g->fs[k];
    int ff = 1, fe = 1;
    j_open(o, 2, NULL, '{', f);
    j_str(o, 3, "facility_id", fa->id, &ff);
    j_str(o, 3, "planted", fa->planted > 0 ? "worse" : fa->planted < 0 ? "better" : "none", &ff);
    j_open(o, 3, "effects", '{', &ff);
    for (int m = 0; m < M__COUNT; m++) j_num(o, 4, mkey[m], fa->eff[m], 4, &fe);
    j_close(o, 3, '}');
    j_num(o, 3, "case_mix_age_shift_years", fa->case_mix, 1, &ff);
    j_num(o, 3, "volume_weight", fa->weight, 6, &ff);
    j_int(o, 3, "stays", s->stays, &ff);
    for (int m = 0; m < M__COUNT; m++) {
        int fm = 1;
        double n = (double)s->n[m];
        j_open(o, 3, mkey[m], '{', &ff);
        j_int(o, 4, "stays", s->n[m], &fm);
        if (m == M_LOS) {
            j_num(o, 4, "observed_mean", n ? s->obs[m] / n : NAN, 6, &fm);
            j_num(o, 4, "expected_mean", n ? s->exp[m] / n : NAN, 6, &fm);
            j_num(o, 4, "expected_mean_without_effect", n ? s->exp0[m] / n : NAN, 6, &fm);
        } else {
            j_int(o, 4, "observed", (long long)s->obs[m], &fm);
            j_num(o, 4, "expected", s->exp[m], 4, &fm);
            j_num(o, 4, "expected_without_effect", s->exp0[m], 4, &fm);
        }
        j_close(o, 3, '}');
    }
    j_close(o, 2, '}');
}

static void truth_timeline(gen_out *o, int *f)
{
    int ff = 1;
    j_open(o, 1, "timeline", '{', f);
    j_key(o, 2, "admission_rate_per_year", &ff);
    /* the formula with the constants the generator used, each after its text */
    static const struct { const char *text; double value; int dec; } rate[] = {
        {"\"clamp to [", RATE_FLOOR, 3}, {", ", RATE_CAP, 2}, {"] of ", RATE_BASE, 2}, {" * exp(", RATE_AGE, 2},
        {" * (age_ref - 65) / 10 + ", RATE_CM, 2},
        {" * number_of_comorbidities) * frailty, frailty ~ Gamma(shape ", RATE_FRAILTY_SHAPE, 2}};
    for (size_t i = 0; i < sizeof rate / sizeof rate[0]; i++) {
        put_s(o, rate[i].text);
        gen_put_fixed(o, rate[i].value, rate[i].dec);
    }
    put_s(o, ", mean 1); age_ref = start_year - birth_year, between 18 and 100\"");
    j_str(o, 2, "first_admission", "first_admission_date + floor(Exponential(rate)) days, truncated to "
          "the period so that every patient has a stay", &ff);
    j_str(o, 2, "next_admission", "after a discharge alive without a death within 30 days of admission: "
          "readmitted ~ Bernoulli(min(1, readmission p / P(no death after discharge))), ignored after "
          "transfer_acute; if readmitted, the next admission is uniform 1-30 days after "
          "discharge, otherwise 31 + floor(Exponential(mean 365 / rate)) days after; none after "
          "last_admission_date", &ff);
    j_str(o, 2, "death", "died ~ Bernoulli(mortality p) at each admission; death_date = admission_date + "
          "uniform(max(0, previous admission + 31 - admission_date) .. 30) days, so no earlier stay's "
          "30-day window (0-30 days) holds it; a death on or before the planned discharge ends the stay that "
          "day as 'expired'; no stays follow a death", &ff);
    j_str(o, 2, "planned_los", "1 + NegBin(mean mu - 1, size), accepted with probability (1 - mortality p) / "
          "P(discharged alive | planned LOS), redrawn otherwise", &ff);
    j_int(o, 2, "max_stays_per_patient", GEN_MAX_STAYS, &ff);
    j_close(o, 1, '}');
}

void gen_truth_write(gen *g, gen_out *o)
{
    int f = 1, fm = 1, fl = 1;
    put_c(o, '{');
    truth_head(g, o, &f);
    truth_covariates(g, o, &f);
    j_open(o, 1, "models", '{', &f);
    for (int m = 0; m < M__COUNT; m++) truth_model(g, o, m, &fm);
    j_close(o, 1, '}');
    j_open(o, 1, "facilities", '[', &f);
    for (int k = 0; k < g->nfac; k++) truth_facility(g, o, k, &fl);
    j_close(o, 1, ']');
    for (int side = 1; side >= -1; side -= 2) {
        int fp = 1;
        j_open(o, 1, side > 0 ? "planted_worse" : "planted_better", '[', &f);
        for (int k = 0; k < g->nfac; k++)
            if (g->fac[k].planted == side) j_str(o, 2, NULL, g->fac[k].id, &fp);
        j_close(o, 1, ']');  /* an empty list comes out as "[\n  ]": still JSON */
    }
    truth_timeline(o, &f);
    put_s(o, "\n}\n");
}
