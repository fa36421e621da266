/* generate.c: the synthetic data generator behind `prognos generate`. Simulates
 * each patient's timeline of stays from fixed models with planted facility effects
 * and writes canonical CSV plus truth.json. One RNG stream per patient, no clock or
 * locale in the output: same parameters, same bytes. Models: engine/GENERATOR.md. */
#include "engine/internal.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/* ---- random numbers: splitmix64 seeds xoshiro256** (Blackman & Vigna) ---- */

typedef struct rng { uint64_t s[4]; double spare; int has_spare; } rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Stream 0 draws the facilities, stream i+1 patient i: a patient's data does
 * not depend on how many patients come before it. */
static void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t y = stream, x = seed ^ splitmix64(&y);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    r->has_spare = 0;
    r->spare = 0;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static inline double rng_unif(rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }
static inline double rng_unif_pos(rng *r) { return ((double)(rng_next(r) >> 11) + 0.5) * 0x1.0p-53; }
static inline int rng_bern(rng *r, double p) { return rng_unif(r) < p; }
static inline double rng_exp(rng *r) { return -log(rng_unif_pos(r)); }

/* Uniform integer in lo..hi inclusive (multiply-shift; bias below 2^-32 * range). */
static inline int rng_int(rng *r, int lo, int hi)
{
    uint64_t range = (uint64_t)((int64_t)hi - lo + 1);
    return lo + (int)(((rng_next(r) >> 32) * range) >> 32);
}

static double rng_normal(rng *r)  /* Box-Muller, keeping the second value */
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double rad = sqrt(-2.0 * log(rng_unif_pos(r))), ang = 6.283185307179586 * rng_unif(r);
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}

static double rng_gamma(rng *r, double shape)  /* scale 1; Marsaglia & Tsang 2000 */
{
    if (shape < 1.0) return rng_gamma(r, shape + 1.0) * pow(rng_unif_pos(r), 1.0 / shape);
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = rng_unif_pos(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

static double rng_beta(rng *r, double a, double b)
{
    double x = rng_gamma(r, a), y = rng_gamma(r, b);
    return x / (x + y);
}

/* Poisson: multiplication method below 10, else PTRS (Hoermann 1993). */
static long rng_poisson(rng *r, double lam)
{
    if (!(lam > 0.0)) return 0;
    if (lam < 10.0) {
        double lim = exp(-lam), prod = rng_unif(r);
        long k = 0;
        while (prod > lim) {
            k++;
            prod *= rng_unif(r);
        }
        return k;
    }
    double slam = sqrt(lam), loglam = log(lam), b = 0.931 + 2.53 * slam;
    double a = -0.059 + 0.02483 * b, invalpha = 1.1239 + 1.1328 / (b - 3.4);
    double vr = 0.9277 - 3.6224 / (b - 2.0);
    for (;;) {
        double u = rng_unif(r) - 0.5, v = rng_unif(r), us = 0.5 - fabs(u);
        double k = floor((2.0 * a / us + b) * u + lam + 0.43);
        if (us >= 0.07 && v <= vr) return (long)k;
        if (k < 0.0 || (us < 0.013 && v > us)) continue;
        if (log(v) + log(invalpha) - log(a / (us * us) + b) <= -lam + k * loglam - lgamma(k + 1.0))
            return (long)k;
    }
}

/* Negative binomial with the given mean and size: Poisson(Gamma(size, mean/size)). */
static long rng_negbin(rng *r, double mean, double size)
{
    return rng_poisson(r, rng_gamma(r, size) * mean / size);
}

static int rng_pick(rng *r, const double *w, int n)  /* index i with probability w[i]/sum(w) */
{
    double total = 0.0;
    for (int i = 0; i < n; i++) total += w[i];
    double u = rng_unif(r) * total;
    for (int i = 0; i < n; i++) {
        if (u < w[i]) return i;
        u -= w[i];
    }
    for (int i = n - 1; i > 0; i--)
        if (w[i] > 0.0) return i;
    return 0;
}

static double logistic(double eta) { return 1.0 / (1.0 + exp(-eta)); }

/* ---- calendar: days since 1970-01-01, proleptic Gregorian (H. Hinnant) ---- */

static int days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153u * (unsigned)(m > 2 ? m - 3 : m + 9) + 2u) / 5u + (unsigned)d - 1u;
    unsigned doe = yoe * 365u + yoe / 4u - yoe / 100u + doy;
    return era * 146097 + (int)doe - 719468;
}

static void civil_from_days(int z, int *y, int *m, int *d)
{
    z += 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460u + doe / 36524u - doe / 146096u) / 365u;
    unsigned doy = doe - (365u * yoe + yoe / 4u - yoe / 100u);
    unsigned mp = (5u * doy + 2u) / 153u;
    *d = (int)(doy - (153u * mp + 2u) / 5u + 1u);
    *m = (int)(mp < 10u ? mp + 3u : mp - 9u);
    *y = (int)yoe + era * 400 + (*m <= 2);
}

static int year_of(int days)
{
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    return y;
}

/* ---- buffered output: one big buffer per file, flushed with fwrite ---- */

typedef struct out {
    FILE *f;
    char *buf;
    size_t len;
    int err;                 /* first errno of a failed write, sticky */
    char path[4200], tmp[4200];
} out;

static void out_flush(out *o)
{
    if (o->len && !o->err && fwrite(o->buf, 1, o->len, o->f) != o->len) o->err = errno ? errno : EIO;
    o->len = 0;
}

static inline void out_room(out *o, size_t n)
{
    if (o->len + n > OUT_CAP) out_flush(o);
}

static inline void put_c(out *o, char c)
{
    out_room(o, 1);
    o->buf[o->len++] = c;
}

static void put_mem(out *o, const char *s, size_t n)
{
    out_room(o, n);
    if (n > OUT_CAP) {
        if (!o->err && fwrite(s, 1, n, o->f) != n) o->err = errno ? errno : EIO;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static inline void put_s(out *o, const char *s) { put_mem(o, s, strlen(s)); }

static void put_u(out *o, uint64_t v, int width)  /* decimal, zero-padded to width */
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width && n < (int)sizeof tmp) tmp[n++] = '0';
    out_room(o, (size_t)n);
    while (n) o->buf[o->len++] = tmp[--n];
}

static void put_i(out *o, long long v)
{
    if (v < 0) put_c(o, '-');
    put_u(o, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, 1);
}

static void put_date(out *o, int days)
{
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    put_u(o, (uint64_t)y, 4);
    put_c(o, '-');
    put_u(o, (uint64_t)m, 2);
    put_c(o, '-');
    put_u(o, (uint64_t)d, 2);
}

/* Fixed-point decimal without printf, so no locale can change it; NaN -> null. */
static void put_fixed(out *o, double x, int dec)
{
    static const double scale[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    if (!isfinite(x)) {
        put_s(o, "null");
        return;
    }
    long long v = llround(x * scale[dec]);
    if (v < 0) {
        put_c(o, '-');
        v = -v;
    }
    put_u(o, (uint64_t)(v / (long long)scale[dec]), 1);
    if (dec) {
        put_c(o, '.');
        put_u(o, (uint64_t)(v % (long long)scale[dec]), dec);
    }
}

static void put_jstr(out *o, const char *s)  /* JSON string literal */
{
    put_c(o, '"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            put_c(o, '\\');
            put_c(o, (char)ch);
        } else if (ch < 0x20) {
            static const char hex[] = "0123456789abcdef";
            put_s(o, "\\u00");
            put_c(o, hex[ch >> 4]);
            put_c(o, hex[ch & 15]);
        } else {
            put_c(o, (char)ch);
        }
    }
    put_c(o, '"');
}

/* ---- the fixed tables: departments, codes, comorbidities, models ---- */

typedef struct code_drg { const char *code, *drg; } code_drg;

enum { D_MEDICINE, D_SURGERY, D_CARDIOLOGY, D_ORTHOPEDICS, D_ONCOLOGY, D_NEUROLOGY, D_PULMONOLOGY,
       D__COUNT };

/* Principal diagnoses here avoid every Quan 2005 code set of the comorbidities
 * below, so a stay's comorbidity flags come only from the patient's own codes. */
static const struct dept {
    const char *name;
    code_drg dx[9];          /* principal diagnoses (NULL-terminated) */
    const char *px[8];       /* ICD-10-PCS procedures (NULL-terminated) */
    double px_mean;          /* Poisson mean of procedures (surgical: 1 + Poisson) */
    int surgical;
    double base_weight;      /* relative share of stays */
    double cost_per_day;     /* dollars, before the (LOS+1)^0.85 and lognormal factors */
} depts[D__COUNT] = {
    {"medicine",
     {{"A41.9", "871"}, {"N39.0", "690"}, {"N17.9", "683"}, {"K92.2", "378"}, {"E86.0", "641"},
      {"E87.1", "640"}, {"L03.115", "603"}, {"D64.9", "812"}, {NULL, NULL}},
     {"30233N1", "0DJ08ZZ", "02HV33Z", "0DB68ZX", "5A1D70Z", "3E0436Z", NULL},
     1.2, 0, 35.0, 1700.0},
    {"surgery",
     {{"K35.80", "343"}, {"K80.10", "418"}, {"K56.609", "390"}, {"K57.32", "392"}, {"K40.90", "352"},
      {"T81.49XA", "863"}, {"K85.90", "439"}, {NULL, NULL}},
     {"0DTJ4ZZ", "0FT44ZZ", "0DTN0ZZ", "0YU50JZ", "0DN80ZZ", "0WJG4ZZ", NULL},
     1.0, 1, 13.0, 4000.0},
    {"cardiology",
     {{"I21.4", "281"}, {"I48.91", "309"}, {"I20.0", "311"}, {"R07.9", "313"}, {"I44.2", "243"},
      {"I35.0", "267"}, {NULL, NULL}},
     {"02703ZZ", "027034Z", "4A023N7", "5A2204Z", "0JH606Z", "02RF38Z", "B2111ZZ", NULL},
     1.7, 0, 14.0, 3200.0},
    {"orthopedics",
     {{"M17.11", "470"}, {"M16.11", "470"}, {"S72.001A", "481"}, {"M48.061", "460"},
      {"S22.31XA", "184"}, {"M54.50", "552"}, {NULL, NULL}},
     {"0SRD0J9", "0SRC0J9", "0SR9019", "0QS604Z", "0SG00AJ", "0SB20ZZ", NULL},
     0.9, 1, 10.0, 5000.0},
    {"oncology",
     {{"Z51.11", "847"}, {"D70.1", "809"}, {"R50.9", "864"}, {"E83.52", "640"}, {NULL, NULL}},
     {"3E03305", "30233N1", "02HV33Z", "0DJ08ZZ", "0BJ08ZZ", "07B74ZX", NULL},
     1.6, 0, 0.0, 2900.0},
    {"neurology",
     {{"I63.9", "065"}, {"G45.9", "069"}, {"G40.909", "101"}, {"I61.9", "064"}, {"G93.40", "071"},
      {"R41.82", "948"}, {NULL, NULL}},
     {"B030ZZZ", "3E03317", "009U3ZX", "4A10X4Z", "B020ZZZ", "03CG3ZZ", NULL},
     1.3, 0, 8.0, 2300.0},
    {"pulmonology",
     {{"J18.9", "194"}, {"J96.01", "189"}, {"J69.0", "178"}, {"I26.99", "176"}, {"J15.9", "178"},
      {NULL, NULL}},
     {"5A1955Z", "5A1945Z", "0BH17EZ", "0BJ08ZZ", "0W9930Z", "5A09357", NULL},
     1.5, 0, 9.0, 2100.0},
};

/* Secondary diagnoses that fall in none of the comorbidity code sets. */
static const char *const filler_dx[] = {
    "E78.5", "I25.10", "E87.1", "D64.9", "E66.9", "F32.9", "Z79.01", "E03.9", "K21.9", "G47.33",
    "Z87.891", "F17.210", "M81.0", "E55.9", "R26.81", "E87.6", "I48.91", "Z95.5", "Z96.651",
    "H91.90", "I11.9", "M19.90", "Z79.899", "R53.1", "G89.29", "Z86.73"};
#define N_FILLER ((int)(sizeof filler_dx / sizeof filler_dx[0]))

enum { CM_CHF, CM_COPD, CM_DIABETES, CM_RENAL, CM_CANCER, CM_DEMENTIA, CM_LIVER, CM__COUNT };

static const struct comorb {
    const char *name, *label, *charlson, *elixhauser;
    const char *prefixes[6];  /* ICD-10-CM prefixes (dot removed) of the codes below */
    code_drg codes[6];        /* NULL-terminated; the last one is female-only for cancer */
    int nmale;                /* codes usable for men (the first nmale) */
    double prev_a, prev_b;    /* logit prevalence = a + b * (age_ref - 65) / 10 */
    int dept;                 /* department of an exacerbation admission */
} comorbs[CM__COUNT] = {
    {"chf", "congestive heart failure", "chf", "chf", {"I50", NULL},
     {{"I50.9", "291"}, {"I50.22", "291"}, {"I50.32", "291"}, {"I50.42", "291"}, {NULL, NULL}},
     4, -1.65, 0.45, D_CARDIOLOGY},
    {"copd", "chronic obstructive pulmonary disease", "chronic_pulmonary", "chronic_pulmonary",
     {"J44", "J43", NULL},
     {{"J44.9", "190"}, {"J44.1", "190"}, {"J43.9", "190"}, {NULL, NULL}},
     3, -1.60, 0.25, D_PULMONOLOGY},
    {"diabetes", "type 2 diabetes without chronic complication", "diabetes_uncomplicated",
     "diabetes_uncomplicated", {"E11", NULL},
     {{"E11.9", "638"}, {NULL, NULL}},  /* E11.6x, E11.8 are 'complicated' in Elixhauser */
     1, -0.95, 0.10, D_MEDICINE},
    {"renal", "chronic kidney disease", "renal", "renal_failure", {"N18", NULL},
     {{"N18.30", "683"}, {"N18.4", "683"}, {"N18.5", "683"}, {"N18.9", "683"}, {NULL, NULL}},
     4, -1.60, 0.40, D_MEDICINE},
    {"cancer", "solid tumour without metastasis", "malignancy", "solid_tumor_wo_metastasis",
     {"C18", "C25", "C34", "C50", "C67", NULL},
     {{"C34.90", "180"}, {"C18.9", "375"}, {"C25.9", "375"}, {"C67.9", "686"}, {"C50.919", "597"},
      {NULL, NULL}},
     4, -2.00, 0.20, D_ONCOLOGY},
    {"dementia", "dementia", "dementia", NULL, {"F01", "F03", "G30", NULL},
     {{"F03.90", "057"}, {"G30.9", "057"}, {"F01.50", "057"}, {NULL, NULL}},
     3, -3.00, 0.80, D_NEUROLOGY},
    {"liver", "chronic liver disease", "mild_liver", "liver", {"K70", "K74", NULL},
     {{"K70.30", "432"}, {"K74.60", "432"}, {"K74.69", "432"}, {NULL, NULL}},
     3, -3.10, -0.20, D_MEDICINE},
};

/* Covariates of every model, in this order. */
enum { X_AGE, X_FEMALE, X_CM0, X_PRIOR = X_CM0 + CM__COUNT, X_EMERGENCY, X__COUNT };
static const char *const x_names[X__COUNT] = {
    "age_per_10y", "female", "chf", "copd", "diabetes", "renal", "cancer", "dementia", "liver",
    "prior_adm_12m", "emergency"};

typedef struct gen_model {
    const char *name;
    double intercept;
    double beta[X__COUNT];
    double planted_lo, planted_hi;  /* |facility effect| of planted facilities */
} gen_model;

enum { M_READM, M_MORT, M_LOS, M__COUNT };
static const gen_model models[M__COUNT] = {
    {"readmission", -2.60, {0.10, -0.05, 0.35, 0.30, 0.15, 0.35, 0.40, 0.15, 0.40, 0.25, 0.20}, 0.50, 0.70},
    {"mortality", -4.10, {0.45, -0.10, 0.45, 0.30, 0.10, 0.40, 0.90, 0.55, 0.60, 0.10, 0.60}, 0.50, 0.70},
    {"los", 1.30, {0.06, -0.02, 0.12, 0.10, 0.05, 0.10, 0.15, 0.12, 0.10, 0.03, 0.15}, 0.15, 0.25},
};
#define LOS_NB_SIZE 1.5          /* los_days - 1 ~ NegBin(mean mu - 1, size): E[los_days] = mu */
#define PX_DAY0_SHARE 0.3        /* a procedure on the admission day (first surgical one: 0.5) */
#define PRIOR_CAP 5
#define RATE_BASE 0.70           /* admissions per year, before covariates and frailty */
#define RATE_AGE 0.15
#define RATE_CM 0.30
#define RATE_FRAILTY_SHAPE 2.0   /* frailty ~ Gamma(shape, 1/shape): mean 1 */
#define RATE_CAP 12.0
#define RATE_FLOOR 0.001         /* keeps the waiting time finite */

static const struct us_state { const char *code, *zip3, *area; } states[] = {
    {"MA", "021", "617"}, {"NY", "100", "212"}, {"PA", "191", "215"}, {"OH", "441", "216"},
    {"IL", "606", "312"}, {"TX", "770", "713"}, {"CA", "900", "213"}, {"FL", "331", "305"},
    {"GA", "303", "404"}, {"WA", "981", "206"}, {"MI", "482", "313"}, {"NC", "276", "919"},
    {"AZ", "850", "602"}, {"CO", "802", "303"}, {"MN", "554", "612"}, {"MO", "631", "314"},
    {"TN", "372", "615"}, {"VA", "232", "804"}, {"NJ", "070", "973"}, {"WI", "532", "414"}};
#define N_STATES ((int)(sizeof states / sizeof states[0]))

static const char *const first_f[] = {
    "Mary", "Patricia", "Linda", "Barbara", "Elizabeth", "Jennifer", "Maria", "Susan", "Margaret",
    "Dorothy", "Lisa", "Nancy", "Karen", "Betty", "Helen", "Sandra", "Donna", "Carol", "Ruth",
    "Sharon", "Michelle", "Laura", "Sarah", "Kimberly"};
static const char *const first_m[] = {
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Charles", "Joseph",
    "Thomas", "Christopher", "Daniel", "Paul", "Mark", "Donald", "George", "Kenneth", "Steven",
    "Edward", "Brian", "Ronald", "Anthony", "Kevin", "Jason"};
static const char *const last_names[] = {
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark",
    "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres",
    "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell",
    "Mitchell"};
static const char *const cities[] = {
    "Riverside", "Fairview", "Springfield", "Franklin", "Greenville", "Madison", "Clinton",
    "Salem", "Georgetown", "Arlington", "Ashland", "Burlington", "Manchester", "Milton", "Newport",
    "Oxford", "Jackson", "Lakewood", "Dover", "Hudson", "Kingston", "Marion", "Auburn", "Dayton",
    "Lexington", "Milford", "Winchester", "Cleveland", "Centerville", "Bristol"};
static const char *const fac_suffix[] = {"General Hospital", "Medical Center",
                                         "Regional Medical Center", "Memorial Hospital",
                                         "University Hospital"};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Provider slots of every facility; a department's stays go to its slots. */
static const char *const slot_specialty[GEN_PROV_PER_FAC] = {
    "internal_medicine", "hospitalist", "general_surgery", "cardiology", "orthopedic_surgery",
    "hematology_oncology", "neurology", "pulmonology", "internal_medicine", "hospitalist"};
static const int dept_slot[D__COUNT] = {-1, 2, 3, 4, 5, 6, 7};   /* -1: slots 0, 1, 8, 9 */

enum { AT_EMERGENCY, AT_URGENT, AT_ELECTIVE, AT__COUNT };
static const char *const adm_type_s[AT__COUNT] = {"emergency", "urgent", "elective"};
enum { AS_ED, AS_PHYS, AS_CLINIC, AS_TRANSFER_HOSP, AS_TRANSFER_SNF, AS_OTHER, AS__COUNT };
static const char *const adm_src_s[AS__COUNT] = {"ed", "physician_referral", "clinic",
                                                 "transfer_hospital", "transfer_snf", "other"};
enum { DS_HOME, DS_HOME_HEALTH, DS_SNF, DS_REHAB, DS_LONG_TERM, DS_TRANSFER, DS_AMA, DS_HOSPICE,
       DS_EXPIRED, DS_OTHER, DS__COUNT };
static const char *const disp_s[DS__COUNT] = {"home", "home_health", "snf", "rehab", "long_term",
                                              "transfer_acute", "ama", "hospice", "expired",
                                              "other"};

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
typedef void (*emit_fn)(out *o, const rowctx *c);

typedef struct gen {
    const px_gen_params *par;
    int start_day, end_day;   /* first and last admission day */
    int nfac;                 /* facilities + small facilities */
    int data_end;             /* the last admission day in the data (features' follow-up end) */
    facility *fac;
    double *fac_cum;          /* cumulative weights for sampling */
    provider *prov;
    int nprov, ndx[D__COUNT], npx[D__COUNT], ncode[CM__COUNT];
    out out[PX_TAB__COUNT + 1];  /* last: truth.json */
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

/* ---- identifiers: affine permutations make them unique without a lookup ---- */

/* A keyed bijection on 0..mod-1: an invertible mix on the next power of two
 * (add, odd multiply, xorshift), cycle-walked until it lands below mod. The
 * walk ends because i's own cycle holds i < mod; i >= mod wraps (repeats). */
static uint64_t perm(uint64_t i, uint64_t key, uint64_t mod)
{
    int bits = 1;
    while ((1ull << bits) < mod) bits++;
    uint64_t mask = (1ull << bits) - 1, x = i % mod;
    int h = bits / 2;
    do {
        x = (x + key) & mask;
        x = (x * 0x9E3779B97F4A7C15ull) & mask;
        x ^= x >> h;
        x = (x * 0xBF58476D1CE4E5B9ull) & mask;
        x ^= x >> h;
    } while (x >= mod);
    return x;
}

#define SSN_SPACE (898ull * 99ull * 9999ull)  /* areas 001-899 but 666, groups 01-99, serials */

static void npi_make(uint64_t idx, char npi[11])
{
    uint64_t body = 100000000ull + perm(idx, 0x4E5049ull, 100000000ull);
    int sum = 24, dbl = 1;  /* 24: the Luhn sum of the NPI prefix 80840 */
    for (int i = 8; i >= 0; i--) {
        int d = (int)(body % 10);
        body /= 10;
        npi[i] = (char)('0' + d);
        if (dbl) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
        dbl = !dbl;
    }
    npi[9] = (char)('0' + (10 - sum % 10) % 10);
    npi[10] = '\0';
}

/* ---- facilities and providers (RNG stream 0) ---- */

/* Number of planted-worse (and of planted-better) facilities. */
static int planted_per_side(int k) { return k >= 10 ? k / 10 : (k >= 3 ? 1 : 0); }

static int facilities_plant(gen *g, rng *r, double median)
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
            int lo = (int)llround(models[m].planted_lo * 100.0), hi = (int)llround(models[m].planted_hi * 100.0);
            fa->eff[m] = fa->planted * rng_int(r, lo, hi) / 100.0;
        }
    }
    free(cand);
    return 0;
}

static void facilities_describe(gen *g, rng *r, double p10, double wmax)
{
    int k = g->par->facilities;
    for (int f = 0; f < k; f++) {
        facility *fa = &g->fac[f];
        snprintf(fa->id, sizeof fa->id, "H%03d", f + 1);
        fa->critical_access = k >= 10 && fa->weight < p10 && !fa->planted;
        const char *city = cities[f % NELEM(cities)];
        int campus = f / NELEM(cities);
        char suffix[32] = "";
        if (campus) snprintf(suffix, sizeof suffix, " Campus %d", campus + 1);
        snprintf(fa->name, sizeof fa->name, "%s %s%s", city,
                 fa->critical_access ? "Community Hospital" : fac_suffix[rng_int(r, 0, NELEM(fac_suffix) - 1)],
                 suffix);
        fa->beds = fa->critical_access ? rng_int(r, 10, 25)
                                       : 50 + (int)llround(650.0 * fa->weight / wmax) + rng_int(r, 0, 40);
    }
}

/* Providers of facilities from..to-1 (g->prov allocated for all of them). */
static void providers_setup(gen *g, rng *r, int from, int to)
{
    for (int i = from * GEN_PROV_PER_FAC; i < to * GEN_PROV_PER_FAC; i++) {
        provider *pv = &g->prov[i];
        npi_make((uint64_t)i, pv->npi);
        pv->fac = i / GEN_PROV_PER_FAC;
        pv->slot = i % GEN_PROV_PER_FAC;
        pv->first = rng_int(r, 0, 2 * NELEM(first_f) - 1);  /* both lists */
        pv->last = rng_int(r, 0, NELEM(last_names) - 1);
    }
}

/* The long tail (--small-facilities): drawn from their own stream after the
 * regular ones, so that the regular facilities, providers and patients come out
 * the same with or without them. Volume weight 0: only their own patient goes
 * there (see stay_draw), so each holds 1..GEN_SMALL_MAX_STAYS stays. */
static void small_facilities_setup(gen *g)
{
    rng r;
    rng_seed(&r, g->par->seed, SMALL_STREAM);
    for (int f = g->par->facilities; f < g->nfac; f++) {
        facility *fa = &g->fac[f];
        fa->weight = 0.0;
        fa->case_mix = (double)llround(4.0 * rng_normal(&r) * 10.0) / 10.0;
        fa->state = rng_int(&r, 0, N_STATES - 1);
        fa->critical_access = 1;
        fa->beds = rng_int(&r, 4, 25);
        snprintf(fa->id, sizeof fa->id, "H%03d", f + 1);
        snprintf(fa->name, sizeof fa->name, "%s Rural Health Center %d", cities[f % NELEM(cities)],
                 f - g->par->facilities + 1);
    }
    providers_setup(g, &r, g->par->facilities, g->nfac);
}

static int facilities_setup(gen *g)
{
    int k = g->par->facilities;
    rng r;
    rng_seed(&r, g->par->seed, 0);
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
        fa->weight = exp(0.8 * rng_normal(&r));
        fa->case_mix = (double)llround(4.0 * rng_normal(&r) * 10.0) / 10.0;
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

static const char *first_name(int i)
{
    return i < NELEM(first_f) ? first_f[i] : first_m[i - NELEM(first_f)];
}

/* ---- patients ---- */

static int pick_facility(const gen *g, rng *r)  /* by volume weight: binary search */
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

static void patient_draw(const gen *g, rng *r, patient *pt)
{
    int span = g->par->end_year - g->par->start_year;
    int picked = pick_facility(g, r);
    if (!pt->small_cap) pt->home_fac = picked;  /* else set by the caller: its small facility */
    pt->female = rng_bern(r, 0.52);
    double age = 18.0 + 82.0 * rng_beta(r, 3.6, 3.0) + g->fac[pt->home_fac].case_mix;
    double age_max = 110 - span < 100 ? 110 - span : 100;
    pt->age_ref = (int)floor(age < 18.0 ? 18.0 : age > age_max ? age_max : age);
    pt->birth_year = g->par->start_year - pt->age_ref;
    int jan1 = days_from_civil(pt->birth_year, 1, 1);
    pt->birth = jan1 + rng_int(r, 0, days_from_civil(pt->birth_year + 1, 1, 1) - jan1 - 1);
    double age10 = (pt->age_ref - 65) / 10.0;
    int ncm = 0;
    pt->cm = 0;
    for (int c = 0; c < CM__COUNT; c++) {
        pt->cm_code[c] = -1;
        if (!rng_bern(r, logistic(comorbs[c].prev_a + comorbs[c].prev_b * age10))) continue;
        pt->cm |= 1u << c;
        pt->cm_code[c] = rng_int(r, 0, (pt->female ? g->ncode[c] : comorbs[c].nmale) - 1);
        ncm++;
    }
    double rate = RATE_BASE * exp(RATE_AGE * age10 + RATE_CM * ncm) *
                  rng_gamma(r, RATE_FRAILTY_SHAPE) / RATE_FRAILTY_SHAPE;
    pt->rate = rate < RATE_FLOOR ? RATE_FLOOR : rate > RATE_CAP ? RATE_CAP : rate;
    pt->first = pt->female ? rng_int(r, 0, NELEM(first_f) - 1)
                           : NELEM(first_f) + rng_int(r, 0, NELEM(first_m) - 1);
    pt->last = rng_int(r, 0, NELEM(last_names) - 1);
    pt->zip_state = rng_bern(r, 0.9) ? g->fac[pt->home_fac].state : rng_int(r, 0, N_STATES - 1);
    pt->zip_tail = rng_int(r, 0, 99);
    pt->death = INT_MIN;
}

/* ---- one stay: department, principal diagnosis, admission, models ---- */

static int has_cm(const patient *pt, int c) { return (int)((pt->cm >> c) & 1u); }

static void stay_department(const gen *g, rng *r, const patient *pt, stay *s)
{
    double w[D__COUNT];
    for (int d = 0; d < D__COUNT; d++) w[d] = depts[d].base_weight;
    w[D_CARDIOLOGY] += 20.0 * has_cm(pt, CM_CHF);
    w[D_ONCOLOGY] += 25.0 * has_cm(pt, CM_CANCER);
    w[D_NEUROLOGY] += 8.0 * has_cm(pt, CM_DEMENTIA);
    w[D_PULMONOLOGY] += 18.0 * has_cm(pt, CM_COPD);
    s->dept = rng_pick(r, w, D__COUNT);
    /* principal: the exacerbation of one of the patient's comorbidities, or a neutral code */
    int cand[CM__COUNT], n = 0;
    for (int c = 0; c < CM__COUNT; c++)
        if (has_cm(pt, c) && comorbs[c].dept == s->dept) cand[n++] = c;
    s->pcm = -1;
    if (n && rng_bern(r, s->dept == D_ONCOLOGY ? 0.4 : 0.5)) s->pcm = cand[rng_int(r, 0, n - 1)];
    else s->pidx = rng_int(r, 0, g->ndx[s->dept] - 1);
}

static void stay_admission(rng *r, stay *s)
{
    static const double readm_w[AT__COUNT] = {0.85, 0.12, 0.03}, surg_w[AT__COUNT] = {0.40, 0.15, 0.45},
                        med_w[AT__COUNT] = {0.70, 0.20, 0.10};
    static const double src_w[AT__COUNT][AS__COUNT] = {
        {0.88, 0.00, 0.00, 0.05, 0.04, 0.03},
        {0.35, 0.40, 0.15, 0.05, 0.00, 0.05},
        {0.00, 0.70, 0.28, 0.00, 0.00, 0.02}};
    s->type = rng_pick(r, s->readmit_in ? readm_w : depts[s->dept].surgical ? surg_w : med_w, AT__COUNT);
    s->src = rng_pick(r, src_w[s->type], AS__COUNT);
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
        double eta = models[m].intercept;
        for (int j = 0; j < X__COUNT; j++) eta += models[m].beta[j] * x[j];
        double eta_f = eta + g->fac[s->fac].eff[m];
        s->p0[m] = m == M_LOS ? exp(eta) : logistic(eta);
        s->p[m] = m == M_LOS ? exp(eta_f) : logistic(eta_f);
    }
}

/* The same law whether or not the patient dies after discharge: a disposition that
 * foretold the death would tell the readmission model more than its covariates
 * (a death after discharge means no readmission), and it is one of its features. */
static int disposition_alive(rng *r, const patient *pt, const stay *s)
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
    return rng_pick(r, w, DS__COUNT);
}

static void stay_cost(const gen *g, rng *r, stay *s)
{
    int slot = dept_slot[s->dept];
    if (slot < 0) slot = (int[]){0, 1, 8, 9}[rng_int(r, 0, 3)];
    s->prov = s->fac * GEN_PROV_PER_FAC + slot;
    long n = rng_poisson(r, depts[s->dept].px_mean) + depts[s->dept].surgical;
    s->nproc = n < g->npx[s->dept] ? (int)n : g->npx[s->dept];
    double cost = depts[s->dept].cost_per_day * pow(s->dis - s->adm + 1.0, 0.85) *
                  exp(0.45 * rng_normal(r)) * (1.0 + 0.25 * s->nproc);
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
static int stay_draw(gen *g, rng *r, patient *pt, int n, int prev_fac)
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
        long los = 1 + rng_negbin(r, mean > 0.0 ? mean : 0.0, LOS_NB_SIZE);
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
static int first_admission(const gen *g, rng *r, const patient *pt)
{
    double span = g->end_day - g->start_day + 1, rate = pt->rate / 365.0;
    double x = -log1p(-rng_unif(r) * -expm1(-rate * span)) / rate;
    int d = (int)floor(x);
    return g->start_day + (d < 0 ? 0 : d >= span ? (int)span - 1 : d);
}

static int timeline(gen *g, rng *r, patient *pt)
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
static void account(gen *g, const patient *pt, int n)
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

/* ---- CSV fields: one emitter per canonical column, matched by name ---- */

#define EMIT(fn) static void fn(out *o, const rowctx *c)
EMIT(f_fac_id) { put_s(o, c->g->fac[c->fac].id); }
EMIT(f_fac_name) { put_s(o, c->g->fac[c->fac].name); }
EMIT(f_fac_type) { put_s(o, c->g->fac[c->fac].critical_access ? "critical_access" : "acute"); }
EMIT(f_fac_state) { put_s(o, states[c->g->fac[c->fac].state].code); }
EMIT(f_fac_beds) { put_i(o, c->g->fac[c->fac].beds); }
EMIT(f_prov_id) { put_s(o, c->g->prov[c->prov].npi); }
EMIT(f_prov_name)
{
    put_s(o, first_name(c->g->prov[c->prov].first));
    put_c(o, ' ');
    put_s(o, last_names[c->g->prov[c->prov].last]);
}
EMIT(f_prov_specialty) { put_s(o, slot_specialty[c->g->prov[c->prov].slot]); }
EMIT(f_pt_id)
{
    put_c(o, 'P');
    put_u(o, (uint64_t)c->pt->idx + 1, 8);
}
EMIT(f_pt_mrn)
{
    put_s(o, "MRN");
    put_u(o, perm((uint64_t)c->pt->idx, 0x4D524Eull, 1000000000ull), 9);
}
EMIT(f_pt_ssn)
{
    uint64_t x = perm((uint64_t)c->pt->idx, 0x53534Eull, SSN_SPACE);
    uint64_t area = x / (99ull * 9999ull) + 1, group = x / 9999ull % 99ull + 1, serial = x % 9999ull + 1;
    put_u(o, area + (area >= 666), 3);
    put_c(o, '-');
    put_u(o, group, 2);
    put_c(o, '-');
    put_u(o, serial, 4);
}
EMIT(f_pt_first) { put_s(o, first_name(c->pt->first)); }
EMIT(f_pt_last) { put_s(o, last_names[c->pt->last]); }
EMIT(f_pt_birth) { put_date(o, c->pt->birth); }
EMIT(f_pt_sex) { put_c(o, c->pt->female ? 'F' : 'M'); }
EMIT(f_pt_zip)
{
    put_s(o, states[c->pt->zip_state].zip3);
    put_u(o, (uint64_t)c->pt->zip_tail, 2);
}
EMIT(f_pt_phone)
{
    uint64_t body = 2000000ull + perm((uint64_t)c->pt->idx, 0x50484Full, 8000000ull);
    put_s(o, states[c->pt->zip_state].area);
    put_c(o, '-');
    put_u(o, body / 10000, 3);
    put_c(o, '-');
    put_u(o, body % 10000, 4);
}
static void put_lower(out *o, const char *s)
{
    for (; *s; s++) put_c(o, (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s));
}
EMIT(f_pt_email)
{
    static const char *const domain[] = {"@example.com", "@example.org", "@example.net"};
    put_lower(o, first_name(c->pt->first));
    put_c(o, '.');
    put_lower(o, last_names[c->pt->last]);
    put_u(o, perm((uint64_t)c->pt->idx, 0x454D41ull, 1000000000ull), 1);
    put_s(o, domain[c->pt->idx % 3]);
}
EMIT(f_pt_death)
{
    if (c->pt->death != INT_MIN) put_date(o, c->pt->death);
}
EMIT(f_enc_id)
{
    put_c(o, 'E');
    put_u(o, (uint64_t)c->enc, 9);
}
EMIT(f_enc_fac) { put_s(o, c->g->fac[c->st->fac].id); }
EMIT(f_enc_attending) { put_s(o, c->g->prov[c->st->prov].npi); }
EMIT(f_enc_adm) { put_date(o, c->st->adm); }
EMIT(f_enc_dis) { put_date(o, c->st->dis); }
EMIT(f_enc_type) { put_s(o, adm_type_s[c->st->type]); }
EMIT(f_enc_src) { put_s(o, adm_src_s[c->st->src]); }
EMIT(f_enc_disp) { put_s(o, disp_s[c->st->disp]); }
EMIT(f_enc_dept) { put_s(o, depts[c->st->dept].name); }
EMIT(f_enc_drg)
{
    const stay *s = c->st;
    put_s(o, s->pcm >= 0 ? comorbs[s->pcm].codes[c->pt->cm_code[s->pcm]].drg : depts[s->dept].dx[s->pidx].drg);
}
EMIT(f_enc_cost) { put_fixed(o, c->st->cost, 2); }
EMIT(f_seq) { put_i(o, c->seq); }
EMIT(f_icd10)
{
    (void)c;
    put_s(o, "icd10");
}
EMIT(f_code) { put_s(o, c->code); }
EMIT(f_poa) { put_c(o, c->poa); }
EMIT(f_pdate) { put_date(o, c->pdate); }

static const struct field_def { int table; const char *col; emit_fn fn; } field_defs[] = {
    {PX_TAB_FACILITIES, "facility_id", f_fac_id}, {PX_TAB_FACILITIES, "name", f_fac_name},
    {PX_TAB_FACILITIES, "type", f_fac_type}, {PX_TAB_FACILITIES, "state", f_fac_state},
    {PX_TAB_FACILITIES, "beds", f_fac_beds},
    {PX_TAB_PROVIDERS, "provider_id", f_prov_id}, {PX_TAB_PROVIDERS, "name", f_prov_name},
    {PX_TAB_PROVIDERS, "specialty", f_prov_specialty}, {PX_TAB_PROVIDERS, "facility_id", f_fac_id},
    {PX_TAB_PATIENTS, "patient_id", f_pt_id}, {PX_TAB_PATIENTS, "mrn", f_pt_mrn},
    {PX_TAB_PATIENTS, "ssn", f_pt_ssn}, {PX_TAB_PATIENTS, "first_name", f_pt_first},
    {PX_TAB_PATIENTS, "last_name", f_pt_last}, {PX_TAB_PATIENTS, "birth_date", f_pt_birth},
    {PX_TAB_PATIENTS, "sex", f_pt_sex}, {PX_TAB_PATIENTS, "zip", f_pt_zip},
    {PX_TAB_PATIENTS, "phone", f_pt_phone}, {PX_TAB_PATIENTS, "email", f_pt_email},
    {PX_TAB_PATIENTS, "death_date", f_pt_death},
    {PX_TAB_ENCOUNTERS, "encounter_id", f_enc_id}, {PX_TAB_ENCOUNTERS, "patient_id", f_pt_id},
    {PX_TAB_ENCOUNTERS, "facility_id", f_enc_fac}, {PX_TAB_ENCOUNTERS, "attending_id", f_enc_attending},
    {PX_TAB_ENCOUNTERS, "admission_date", f_enc_adm}, {PX_TAB_ENCOUNTERS, "discharge_date", f_enc_dis},
    {PX_TAB_ENCOUNTERS, "admission_type", f_enc_type}, {PX_TAB_ENCOUNTERS, "admission_source", f_enc_src},
    {PX_TAB_ENCOUNTERS, "discharge_disposition", f_enc_disp},
    {PX_TAB_ENCOUNTERS, "department", f_enc_dept}, {PX_TAB_ENCOUNTERS, "drg", f_enc_drg},
    {PX_TAB_ENCOUNTERS, "total_cost", f_enc_cost},
    {PX_TAB_DIAGNOSES, "encounter_id", f_enc_id}, {PX_TAB_DIAGNOSES, "seq", f_seq},
    {PX_TAB_DIAGNOSES, "code_system", f_icd10}, {PX_TAB_DIAGNOSES, "code", f_code},
    {PX_TAB_DIAGNOSES, "present_on_admission", f_poa},
    {PX_TAB_PROCEDURES, "encounter_id", f_enc_id}, {PX_TAB_PROCEDURES, "seq", f_seq},
    {PX_TAB_PROCEDURES, "code_system", f_icd10}, {PX_TAB_PROCEDURES, "code", f_code},
    {PX_TAB_PROCEDURES, "procedure_date", f_pdate},
};

/* Maps px_canonical's columns, in its order, to emitters. A column the generator
 * does not know is left empty when optional and is an error when required. */
static int layout_build(gen *g, px_err *e)
{
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        const px_table *tab = &px_canonical[t];
        if (tab->ncols > GEN_MAX_COLS)
            return px_err_set(e, PX_ESTATE, "canonical table '%s' has too many columns", tab->name);
        for (int i = 0; i < tab->ncols; i++) {
            g->layout[t][i] = NULL;
            for (size_t k = 0; k < sizeof field_defs / sizeof field_defs[0]; k++)
                if (field_defs[k].table == t && strcmp(field_defs[k].col, tab->cols[i].name) == 0)
                    g->layout[t][i] = field_defs[k].fn;
            if (!g->layout[t][i] && tab->cols[i].required)
                return px_err_set(e, PX_ESTATE, "generator cannot fill required column '%s.%s'",
                                  tab->name, tab->cols[i].name);
        }
    }
    return 0;
}

static void emit_row(gen *g, int t, const rowctx *c)
{
    out *o = &g->out[t];
    for (int i = 0; i < px_canonical[t].ncols; i++) {
        if (i) put_c(o, ',');
        if (g->layout[t][i]) g->layout[t][i](o, c);
    }
    put_c(o, '\n');
}

static void emit_header(gen *g, int t)
{
    for (int i = 0; i < px_canonical[t].ncols; i++) {
        if (i) put_c(&g->out[t], ',');
        put_s(&g->out[t], px_canonical[t].cols[i].name);
    }
    put_c(&g->out[t], '\n');
}

/* ---- rows of a patient ---- */

static char poa_draw(rng *r, double y)  /* Y with probability y, else mostly N */
{
    double u = rng_unif(r);
    return u < y ? 'Y' : u < y + (1.0 - y) * 0.65 ? 'N' : u < y + (1.0 - y) * 0.9 ? 'U' : 'W';
}

static void emit_diagnoses(gen *g, rng *r, rowctx *c)
{
    const stay *s = c->st;
    const patient *pt = c->pt;
    const char *principal = s->pcm >= 0 ? comorbs[s->pcm].codes[pt->cm_code[s->pcm]].code
                                        : depts[s->dept].dx[s->pidx].code;
    c->seq = 1, c->code = principal, c->poa = rng_bern(r, 0.97) ? 'Y' : rng_bern(r, 0.67) ? 'U' : 'W';
    emit_row(g, PX_TAB_DIAGNOSES, c);
    for (int cm = 0; cm < CM__COUNT; cm++) {
        if (!has_cm(pt, cm) || cm == s->pcm) continue;
        c->seq++, c->code = comorbs[cm].codes[pt->cm_code[cm]].code, c->poa = 'Y';
        emit_row(g, PX_TAB_DIAGNOSES, c);
    }
    int idx[N_FILLER];
    for (int i = 0; i < N_FILLER; i++) idx[i] = i;
    long nf = rng_poisson(r, 3.5);
    for (int i = 0; i < nf && i < N_FILLER && c->seq < GEN_MAX_DX; i++) {
        int j = rng_int(r, i, N_FILLER - 1), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
        if (strcmp(filler_dx[idx[i]], principal) == 0) continue;
        c->seq++, c->code = filler_dx[idx[i]], c->poa = poa_draw(r, 0.88);
        emit_row(g, PX_TAB_DIAGNOSES, c);
    }
    g->n_dx += c->seq;
}

/* Procedure dates: on the admission day with a fixed probability (the first
 * surgical one 0.5, others PX_DAY0_SHARE), else a later day of the stay (the
 * first surgical one day 1), so that the admission-day count (a feature known at
 * admission) does not depend on the length of stay or on a death; a later
 * procedure of a stay that ended on its admission day (a death) is not written. */
static void emit_procedures(gen *g, rng *r, rowctx *c)
{
    const stay *s = c->st;
    int n = 0, idx[8], dates[8], los = s->dis - s->adm;
    for (int i = 0; i < g->npx[s->dept]; i++) idx[i] = i;
    for (int i = 0; i < s->nproc; i++) {
        int j = rng_int(r, i, g->npx[s->dept] - 1), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
        int first_surgical = depts[s->dept].surgical && i == 0;
        int day = rng_bern(r, first_surgical ? 0.5 : PX_DAY0_SHARE) ? 0 : first_surgical ? 1 : rng_int(r, 1, los > 1 ? los : 1);
        if (day > los) continue;
        t = idx[n], idx[n] = idx[i], idx[i] = t;
        dates[n++] = s->adm + day;
    }
    for (int i = 1; i < n; i++)  /* insertion sort by date: seq follows the calendar */
        for (int j = i; j > 0 && dates[j] < dates[j - 1]; j--) {
            int td = dates[j], ti = idx[j];
            dates[j] = dates[j - 1], idx[j] = idx[j - 1];
            dates[j - 1] = td, idx[j - 1] = ti;
        }
    for (int i = 0; i < n; i++) {
        c->seq = i + 1, c->code = depts[s->dept].px[idx[i]], c->pdate = dates[i];
        emit_row(g, PX_TAB_PROCEDURES, c);
    }
    g->n_px += n;
}

static void emit_patient(gen *g, rng *r, const patient *pt, int n)
{
    rowctx c = {.g = g, .pt = pt};
    emit_row(g, PX_TAB_PATIENTS, &c);
    for (int k = 0; k < n; k++) {
        c.st = &g->stays[k];
        c.enc = ++g->n_enc;
        emit_row(g, PX_TAB_ENCOUNTERS, &c);
        emit_diagnoses(g, r, &c);
        emit_procedures(g, r, &c);
    }
}

static void emit_facilities(gen *g)
{
    rowctx c = {.g = g};
    for (c.fac = 0; c.fac < g->nfac; c.fac++) emit_row(g, PX_TAB_FACILITIES, &c);
    for (c.prov = 0; c.prov < g->nprov; c.prov++) {
        c.fac = g->prov[c.prov].fac;
        emit_row(g, PX_TAB_PROVIDERS, &c);
    }
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
static int population_finish(gen *g, int m)
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
static void j_key(out *o, int ind, const char *key, int *first)
{
    put_s(o, *first ? "\n" : ",\n");
    *first = 0;
    for (int i = 0; i < ind; i++) put_s(o, "  ");
    if (key) {
        put_jstr(o, key);
        put_s(o, ": ");
    }
}
static void j_str(out *o, int ind, const char *key, const char *v, int *first)
{
    j_key(o, ind, key, first);
    if (v) put_jstr(o, v);
    else put_s(o, "null");
}
static void j_int(out *o, int ind, const char *key, long long v, int *first)
{
    j_key(o, ind, key, first);
    put_i(o, v);
}
static void j_num(out *o, int ind, const char *key, double v, int dec, int *first)
{
    j_key(o, ind, key, first);
    put_fixed(o, v, dec);
}
static void j_date(out *o, int ind, const char *key, int days, int *first)
{
    j_key(o, ind, key, first);
    put_c(o, '"');
    put_date(o, days);
    put_c(o, '"');
}
static void j_open(out *o, int ind, const char *key, char brace, int *first)
{
    j_key(o, ind, key, first);
    put_c(o, brace);
}
static void j_close(out *o, int ind, char brace)
{
    put_c(o, '\n');
    for (int i = 0; i < ind; i++) put_s(o, "  ");
    put_c(o, brace);
}

static void truth_head(gen *g, out *o, int *f)
{
    const px_gen_params *p = g->par;
    j_str(o, 1, "format", "prognos-generator-truth", f);
    j_int(o, 1, "format_version", 1, f);
    j_str(o, 1, "generator", "prognos " PX_VERSION " engine/generate.c; documented in engine/GENERATOR.md", f);
    int ff = 1;
    j_open(o, 1, "params", '{', f);
    j_key(o, 2, "seed", &ff);
    put_u(o, p->seed, 1);
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

static void truth_comorbidity(gen *g, out *o, int c, int *f)
{
    const struct comorb *cm = &comorbs[c];
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

static void truth_covariates(gen *g, out *o, int *f)
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
        j_str(o, 3, "name", x_names[x], &ff);
        if (x >= X_CM0 && x < X_PRIOR) {
            const struct comorb *cm = &comorbs[x - X_CM0];
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

static void truth_model(gen *g, out *o, int m, int *f)
{
    const gen_model *md = &models[m];
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
    for (int x = 0; x < X__COUNT; x++) j_num(o, 4, x_names[x], md->beta[x], 4, &fc);
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

static void truth_facility(gen *g, out *o, int k, int *f)
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

static void truth_timeline(out *o, int *f)
{
    int ff = 1;
    j_open(o, 1, "timeline", '{', f);
    j_key(o, 2, "admission_rate_per_year", &ff);
    put_s(o, "\"clamp to [");
    put_fixed(o, RATE_FLOOR, 3);
    put_s(o, ", ");
    put_fixed(o, RATE_CAP, 2);
    put_s(o, "] of ");
    put_fixed(o, RATE_BASE, 2);
    put_s(o, " * exp(");
    put_fixed(o, RATE_AGE, 2);
    put_s(o, " * (age_ref - 65) / 10 + ");
    put_fixed(o, RATE_CM, 2);
    put_s(o, " * number_of_comorbidities) * frailty, frailty ~ Gamma(shape ");
    put_fixed(o, RATE_FRAILTY_SHAPE, 2);
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

static void truth_write(gen *g, out *o)
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

/* ---- files ---- */

/* Each file is written as NAME.tmp and renamed once all are complete, so a
 * failed run never leaves a set of files that looks whole. */
static int outs_open(gen *g, px_err *e)
{
    for (int t = 0; t <= PX_TAB__COUNT; t++) {
        out *o = &g->out[t];
        const char *name = t < PX_TAB__COUNT ? px_canonical[t].file : "truth.json";
        if (snprintf(o->path, sizeof o->path, "%s/%s", g->par->out_dir, name) >= (int)sizeof o->path ||
            snprintf(o->tmp, sizeof o->tmp, "%s/%s.tmp", g->par->out_dir, name) >= (int)sizeof o->tmp)
            return px_err_set(e, PX_EINVAL, "output directory name too long");
        if (!(o->buf = malloc(OUT_CAP))) return px_err_set(e, PX_ENOMEM, "out of memory");
        if (!(o->f = fopen(o->tmp, "wb")))
            return px_err_set(e, PX_EIO, "cannot create '%s': %s", o->tmp, strerror(errno));
    }
    return 0;
}

static int outs_error(const gen *g, px_err *e)
{
    for (int t = 0; t <= PX_TAB__COUNT; t++)
        if (g->out[t].err)
            return px_err_set(e, PX_EIO, "cannot write '%s': %s", g->out[t].tmp, strerror(g->out[t].err));
    return 0;
}

/* Flushes and closes every file; on success (rc == 0) renames them into place,
 * otherwise removes them. Returns rc or the first close/rename error. */
static int outs_close(gen *g, int rc, px_err *e)
{
    for (int t = 0; t <= PX_TAB__COUNT; t++) {
        out *o = &g->out[t];
        if (o->f) {
            out_flush(o);
            if (fclose(o->f) != 0 && !o->err) o->err = errno ? errno : EIO;
            o->f = NULL;
        }
    }
    if (rc == 0) rc = outs_error(g, e);
    for (int t = 0; t <= PX_TAB__COUNT; t++) {
        out *o = &g->out[t];
        if (rc == 0 && o->buf && rename(o->tmp, o->path) != 0)
            rc = px_err_set(e, PX_EIO, "cannot rename '%s': %s", o->tmp, strerror(errno));
        else if (rc != 0 && o->buf)
            unlink(o->tmp);
        free(o->buf);
        o->buf = NULL;
    }
    return rc;
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
    if (days_from_civil(p->end_year, 12, 31) + GEN_LOS_MAX < today) return 0;
    while (last_ok > 1900 && days_from_civil(last_ok, 12, 31) + GEN_LOS_MAX >= today) last_ok--;
    px_err_set(e, PX_EINVAL, "admission years %d-%d reach into the future", p->start_year, p->end_year);
    px_err_detail(e, "a stay admitted in %d may end up to %d days later, after today", p->end_year, GEN_LOS_MAX);
    px_err_hint(e, "end the admission years in %d or earlier", last_ok);
    return PX_EINVAL;
}

static int gen_setup(gen *g, const px_gen_params *p, px_err *e)
{
    g->par = p;
    g->nfac = p->facilities + p->small_facilities;
    g->start_day = days_from_civil(p->start_year, 1, 1);
    g->end_day = days_from_civil(p->end_year, 12, 31);
    for (int d = 0; d < D__COUNT; d++) {
        while (depts[d].dx[g->ndx[d]].code) g->ndx[d]++;
        while (depts[d].px[g->npx[d]]) g->npx[d]++;
    }
    for (int c = 0; c < CM__COUNT; c++)
        while (comorbs[c].codes[g->ncode[c]].code) g->ncode[c]++;
    int rc = layout_build(g, e);
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
    for (int t = 0; t < PX_TAB__COUNT; t++) emit_header(g, t);
    emit_facilities(g);
    long long total = g->par->patients + g->par->small_facilities;
    g->data_end = INT_MIN;
    for (long long i = 0; i < total; i++) {
        rng r;
        patient pt = {.idx = i};
        rng_seed(&r, g->par->seed, (uint64_t)i + 1);
        /* after the regular patients: one patient per small facility, whose first
         * 1..GEN_SMALL_MAX_STAYS stays are there */
        long long small = i - g->par->patients;
        if (small >= 0) {
            pt.small_cap = rng_int(&r, 1, GEN_SMALL_MAX_STAYS);
            pt.home_fac = g->par->facilities + (int)small;
        }
        patient_draw(g, &r, &pt);
        int n = timeline(g, &r, &pt);
        account(g, &pt, n);
        emit_patient(g, &r, &pt, n);
        if ((i & 4095) == 4095 && (g->oom || outs_error(g, e) < 0)) break;
    }
    if (g->oom) return px_err_set(e, PX_ENOMEM, "out of memory");
    int rc = outs_error(g, e);
    if (rc < 0) return rc;
    if (population_finish(g, M_READM) < 0 || population_finish(g, M_MORT) < 0)
        return px_err_set(e, PX_ENOMEM, "out of memory");
    truth_write(g, &g->out[PX_TAB__COUNT]);
    return 0;
}

int px_generate(const px_gen_params *p, px_gen_result *r, px_err *e)
{
    int rc = params_check(p, e);
    if (rc < 0) return rc;
    gen *g = calloc(1, sizeof *g);
    if (!g) return px_err_set(e, PX_ENOMEM, "out of memory");
    rc = gen_setup(g, p, e);
    if (rc == 0) rc = outs_open(g, e);
    if (rc == 0) rc = gen_run(g, e);
    rc = outs_close(g, rc, e);
    if (rc == 0 && r) {
        r->patients = p->patients + p->small_facilities, r->encounters = g->n_enc, r->diagnoses = g->n_dx;
        r->procedures = g->n_px, r->facilities = g->nfac, r->providers = g->nprov;
    }
    gen_release(g);
    free(g);
    return rc;
}
