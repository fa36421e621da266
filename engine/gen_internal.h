/* gen_internal.h: what the synthetic data generator's files share (engine/ only).
 * generate.c draws the patients and their stays and calls the others, one way:
 * gen_tables.c (the fixed tables: departments, codes, comorbidities, models),
 * gen_rng.c (the draws), gen_out.c (buffered output files), gen_csv.c (the
 * canonical CSV rows) and gen_truth.c (outcomes as the warehouse would count them,
 * and truth.json). Same parameters, same bytes: no clock or locale in the output.
 * Models: engine/GENERATOR.md. */
#ifndef PROGNOS_ENGINE_GEN_INTERNAL_H
#define PROGNOS_ENGINE_GEN_INTERNAL_H

#include "engine/internal.h"
#include <math.h>
#include <string.h>

#define GEN_MAX_PATIENTS 100000000LL
#define GEN_MAX_FACILITIES 9999
#define GEN_MAX_SMALL_FACILITIES 100000
#define GEN_SMALL_MAX_STAYS 10 /* stays of a small facility: 1..this */
#define SMALL_STREAM 0x8000000000000000ull /* RNG stream of the small facilities' descriptions */
#define MORT_WINDOW 30         /* death_30d: death 0..30 days after admission, as features/sql/mortality.sql */
#define FOLLOW_UP 30           /* days of follow-up the feature sets require (readmission, mortality) */
#define HOLDOUT_TIME_SHARE 0.25 /* registry/train.c's default temporal holdout */
#define GEN_MAX_SPAN_YEARS 40
#define GEN_MAX_STAYS 256      /* per patient; never reached at default settings */
#define GEN_PROV_PER_FAC 10
#define GEN_LOS_MAX 365        /* days, the canonical limit */
#define GEN_MAX_DX 30          /* diagnoses per stay */
#define GEN_MAX_COLS 32
#define OUT_CAP (1u << 20)     /* bytes buffered per output file */

/* ---- random numbers: engine's px_rng (splitmix64 seeds xoshiro256**) ---- */

typedef struct gen_rng { px_rng x; double spare; int has_spare; } gen_rng;

/* Stream 0 draws the facilities, stream i+1 patient i: a patient's data does
 * not depend on how many patients come before it. */
void gen_rng_seed(gen_rng *r, uint64_t seed, uint64_t stream);

static inline double rng_unif(gen_rng *r) { return px_rng_unif(&r->x); }
static inline double rng_unif_pos(gen_rng *r) { return px_rng_unif_pos(&r->x); }
static inline int rng_bern(gen_rng *r, double p) { return rng_unif(r) < p; }
static inline double rng_exp(gen_rng *r) { return -log(rng_unif_pos(r)); }

/* Uniform integer in lo..hi inclusive (multiply-shift; bias below 2^-32 * range). */
static inline int rng_int(gen_rng *r, int lo, int hi)
{
    uint64_t range = (uint64_t)((int64_t)hi - lo + 1);
    return lo + (int)(((px_rng_next(&r->x) >> 32) * range) >> 32);
}

double gen_normal(gen_rng *r);                      /* Box-Muller, keeping the second value */
double gen_gamma(gen_rng *r, double shape);         /* scale 1; Marsaglia & Tsang 2000 */
double gen_beta(gen_rng *r, double a, double b);
long gen_poisson(gen_rng *r, double lam);           /* multiplication below 10, else PTRS */
long gen_negbin(gen_rng *r, double mean, double size);
int gen_pick(gen_rng *r, const double *w, int n);   /* index i with probability w[i]/sum(w) */

static inline double logistic(double eta) { return 1.0 / (1.0 + exp(-eta)); }

static inline int year_of(int days)
{
    int y, m, d;
    px_civil_from_days(days, &y, &m, &d);
    return y;
}

/* ---- buffered output: one big buffer per file, flushed with fwrite ---- */

typedef struct gen_out {
    FILE *f;
    char *buf;
    size_t len;
    int err;                 /* first errno of a failed write, sticky */
    char path[4200], tmp[4200];
} gen_out;

void gen_out_flush(gen_out *o);

static inline void out_room(gen_out *o, size_t n)
{
    if (o->len + n > OUT_CAP) gen_out_flush(o);
}

static inline void put_c(gen_out *o, char c)
{
    out_room(o, 1);
    o->buf[o->len++] = c;
}

void gen_put_mem(gen_out *o, const char *s, size_t n);
static inline void put_s(gen_out *o, const char *s) { gen_put_mem(o, s, strlen(s)); }
void gen_put_u(gen_out *o, uint64_t v, int width);  /* decimal, zero-padded to width */
void gen_put_i(gen_out *o, long long v);
void gen_put_date(gen_out *o, int days);            /* YYYY-MM-DD */
/* Fixed-point decimal without printf, so no locale can change it; NaN -> null. */
void gen_put_fixed(gen_out *o, double x, int dec);
void gen_put_jstr(gen_out *o, const char *s);       /* JSON string literal */

/* ---- the fixed tables (gen_tables.c) ---- */

typedef struct code_drg { const char *code, *drg; } code_drg;

enum { D_MEDICINE, D_SURGERY, D_CARDIOLOGY, D_ORTHOPEDICS, D_ONCOLOGY, D_NEUROLOGY, D_PULMONOLOGY,
       D__COUNT };

/* Principal diagnoses here avoid every Quan 2005 code set of the comorbidities
 * below, so a stay's comorbidity flags come only from the patient's own codes. */
typedef struct gen_dept {
    const char *name;
    code_drg dx[9];          /* principal diagnoses (NULL-terminated) */
    const char *px[8];       /* ICD-10-PCS procedures (NULL-terminated) */
    double px_mean;          /* Poisson mean of procedures (surgical: 1 + Poisson) */
    int surgical;
    double base_weight;      /* relative share of stays */
    double cost_per_day;     /* dollars, before the (LOS+1)^0.85 and lognormal factors */
} gen_dept;
extern const gen_dept gen_depts[D__COUNT];

/* Secondary diagnoses that fall in none of the comorbidity code sets. */
#define N_FILLER 26
extern const char *const gen_filler_dx[N_FILLER];

enum { CM_CHF, CM_COPD, CM_DIABETES, CM_RENAL, CM_CANCER, CM_DEMENTIA, CM_LIVER, CM__COUNT };

typedef struct gen_comorb {
    const char *name, *label, *charlson, *elixhauser;
    const char *prefixes[6];  /* ICD-10-CM prefixes (dot removed) of the codes below */
    code_drg codes[6];        /* NULL-terminated; the last one is female-only for cancer */
    int nmale;                /* codes usable for men (the first nmale) */
    double prev_a, prev_b;    /* logit prevalence = a + b * (age_ref - 65) / 10 */
    int dept;                 /* department of an exacerbation admission */
} gen_comorb;
extern const gen_comorb gen_comorbs[CM__COUNT];

/* Covariates of every model, in this order. */
enum { X_AGE, X_FEMALE, X_CM0, X_PRIOR = X_CM0 + CM__COUNT, X_EMERGENCY, X__COUNT };
extern const char *const gen_x_names[X__COUNT];

typedef struct gen_model {
    const char *name;
    double intercept;
    double beta[X__COUNT];
    double planted_lo, planted_hi;  /* |facility effect| of planted facilities */
} gen_model;

enum { M_READM, M_MORT, M_LOS, M__COUNT };
extern const gen_model gen_models[M__COUNT];
#define LOS_NB_SIZE 1.5          /* los_days - 1 ~ NegBin(mean mu - 1, size): E[los_days] = mu */
#define PX_DAY0_SHARE 0.3        /* a procedure on the admission day (first surgical one: 0.5) */
#define PRIOR_CAP 5
#define RATE_BASE 0.70           /* admissions per year, before covariates and frailty */
#define RATE_AGE 0.15
#define RATE_CM 0.30
#define RATE_FRAILTY_SHAPE 2.0   /* frailty ~ Gamma(shape, 1/shape): mean 1 */
#define RATE_CAP 12.0
#define RATE_FLOOR 0.001         /* keeps the waiting time finite */

typedef struct gen_state { const char *code, *zip3, *area; } gen_state;
#define N_STATES 20
extern const gen_state gen_states[N_STATES];
#define N_FIRST_F 24
#define N_FIRST_M 24
#define N_LAST_NAMES 48
#define N_CITIES 30
#define N_FAC_SUFFIX 5
extern const char *const gen_first_f[N_FIRST_F], *const gen_first_m[N_FIRST_M];
extern const char *const gen_last_names[N_LAST_NAMES], *const gen_cities[N_CITIES];
extern const char *const gen_fac_suffix[N_FAC_SUFFIX];
const char *gen_first_name(int i);   /* 0..N_FIRST_F-1 women's names, then men's */

/* Provider slots of every facility; a department's stays go to its slots. */
extern const char *const gen_slot_specialty[GEN_PROV_PER_FAC];
extern const int gen_dept_slot[D__COUNT];   /* -1: slots 0, 1, 8, 9 */

enum { AT_EMERGENCY, AT_URGENT, AT_ELECTIVE, AT__COUNT };
extern const char *const gen_adm_type_s[AT__COUNT];
enum { AS_ED, AS_PHYS, AS_CLINIC, AS_TRANSFER_HOSP, AS_TRANSFER_SNF, AS_OTHER, AS__COUNT };
extern const char *const gen_adm_src_s[AS__COUNT];
enum { DS_HOME, DS_HOME_HEALTH, DS_SNF, DS_REHAB, DS_LONG_TERM, DS_TRANSFER, DS_AMA, DS_HOSPICE,
       DS_EXPIRED, DS_OTHER, DS__COUNT };
extern const char *const gen_disp_s[DS__COUNT];

/* ---- generator state ---- */

typedef struct facility {
    char id[16], name[96];
    int critical_access, state, beds;
    double weight;            /* relative volume */
    double case_mix;          /* shift of its patients' age, years (not an effect) */
    int planted;              /* +1 worse, -1 better, 0 none */
    double eff[M__COUNT];     /* added to each model's linear predictor */
} facility;

typedef struct provider { char npi[11]; int first, last, fac, slot; } provider;

typedef struct patient {
    long long idx;            /* 0-based; patient_id is P + idx+1 */
    int birth, birth_year, female, age_ref, home_fac, zip_state, zip_tail, first, last;
    unsigned cm;              /* bit c set: has comorbidity c */
    int cm_code[CM__COUNT];
    int death;                /* day number, or INT_MIN */
    double rate;              /* admissions per year */
    int small_cap;            /* small-facility patient: its first small_cap stays are at home_fac */
} patient;

typedef struct stay {
    int adm, dis, fac, prov, dept, type, src, disp, prior, readmit_in;
    int pcm, pidx;            /* principal: comorbidity code (pcm >= 0) or depts[].dx[pidx] */
    int nproc;
    double p[M__COUNT], p0[M__COUNT];  /* p or mean LOS, with / without the facility effect */
    double alive;             /* P(no death after discharge | discharged alive), see stay_draw */
    int q_clamped;            /* the readmission draw needed a probability above 1 (clamped) */
    double cost;
} stay;

typedef struct fac_stats {
    long long stays, n[M__COUNT];
    double obs[M__COUNT], exp[M__COUNT], exp0[M__COUNT];
} fac_stats;

/* One stay of a logistic model's population, kept until the data's last admission
 * date (which decides the follow-up) is known. */
typedef struct py { double p, p0; int y, day, fac; } py;
typedef struct pyvec { py *v; size_t n, cap; } pyvec;

typedef struct rowctx rowctx;
typedef void (*emit_fn)(gen_out *o, const rowctx *c);

typedef struct gen {
    const px_gen_params *par;
    int start_day, end_day;   /* first and last admission day */
    int nfac;                 /* facilities + small facilities */
    int data_end;             /* the last admission day in the data (features' follow-up end) */
    facility *fac;
    double *fac_cum;          /* cumulative weights for sampling */
    provider *prov;
    int nprov, ndx[D__COUNT], npx[D__COUNT], ncode[CM__COUNT];
    gen_out out[PX_TAB__COUNT + 1];  /* last: truth.json */
    emit_fn layout[PX_TAB__COUNT][GEN_MAX_COLS];
    stay stays[GEN_MAX_STAYS];
    long long n_enc, n_dx, n_px, n_deaths, n_capped, n_q_clamped, cm_patients[CM__COUNT];
    double sum_p[M__COUNT];   /* over each model's population */
    fac_stats *fs;
    pyvec auc[2];             /* readmission, mortality: every stay that may enter the population */
    double auc_all[2], auc_hold[2];  /* true-p AUC over the population / its temporal holdout */
    long long n_hold[2], ev_hold[2];
    int hold_from[2];         /* first day of the temporal holdout */
    int oom;
} gen;

struct rowctx {
    const gen *g;
    int fac, prov;
    const patient *pt;
    const stay *st;
    long long enc;
    int seq, pdate;
    const char *code;
    char poa;
};

static inline int has_cm(const patient *pt, int c) { return (int)((pt->cm >> c) & 1u); }

/* ---- files (gen_out.c) ---- */

/* Each file is written as NAME.tmp and renamed once all are complete, so a
 * failed run never leaves a set of files that looks whole. */
int gen_outs_open(gen *g, px_err *e);
int gen_outs_error(const gen *g, px_err *e);
/* Flushes and closes every file; on success (rc == 0) renames them into place,
 * otherwise removes them. Returns rc or the first close/rename error. */
int gen_outs_close(gen *g, int rc, px_err *e);

/* ---- CSV rows (gen_csv.c) ---- */

void gen_npi_make(uint64_t idx, char npi[11]);   /* a valid, unique, fake NPI */
/* Maps px_canonical's columns, in its order, to emitters. A column the generator
 * does not know is left empty when optional and is an error when required. */
int gen_layout_build(gen *g, px_err *e);
void gen_emit_header(gen *g, int t);
void gen_emit_facilities(gen *g);
/* The patient's row and the rows of its n stays (g->stays). */
void gen_emit_patient(gen *g, gen_rng *r, const patient *pt, int n);

/* ---- outcomes and truth.json (gen_truth.c) ---- */

/* Adds a patient's n stays to the facility counts and the populations. */
void gen_account(gen *g, const patient *pt, int n);
/* Once the data's last admission day is known; -1 on out of memory. */
int gen_population_finish(gen *g, int m);
void gen_truth_write(gen *g, gen_out *o);

#endif
