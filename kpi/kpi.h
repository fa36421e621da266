/* kpi.h: risk-adjusted outcome KPIs with confidence intervals, funnel limits,
 * small-cell suppression, differentially private release, and the executive report.
 *
 * Two layers. The interval statistics (px_kpi_wilson ... px_kpi_laplace) are pure
 * functions of counts and sums (no database), checked against R (tests/unit/kpi_ref.R).
 * px_kpi_compute scores the feature tables with the registered risk models
 * compiled to SQL inside PostgreSQL (SVMs in C), sums every measure to the finest
 * cell in one pass, rolls up and computes the intervals in C, and stores one row
 * per measure, period and unit in kpi.results (kpi.predictions is a view of the
 * latest run's per-stay predictions, computed on read), naming the
 * model version, the data batches and the method. px_kpi_report renders a stored
 * run as a self-contained HTML page (inline SVG, no network), JSON and CSV.
 * Library calls return 0 or a negative PX_E* code and fill the caller's px_err. */
#ifndef PROGNOS_KPI_H
#define PROGNOS_KPI_H

#include "registry/registry.h"

/* Returns a one-line description of the library (static string). */
const char *px_kpi_purpose(void);

/* ---- interval statistics (stats.c) ---------------------------------------- */

/* An estimate with a two-sided interval at the level it was computed for. */
typedef struct px_ci {
    double est, lo, hi;
} px_ci;

/* Wilson (1927) score interval for a proportion x/n without continuity
 * correction: what R's prop.test(x, n, correct = FALSE) reports. conf in (0,1).
 * Returns 0, or PX_EINVAL for n <= 0, x outside 0..n or conf outside (0,1). */
int px_kpi_wilson(double x, double n, double conf, px_ci *out);

/* Clopper-Pearson exact interval (beta quantiles): R's binom.test(x, n). */
int px_kpi_clopper_pearson(double x, double n, double conf, px_ci *out);

/* Exact (Garwood 1936) interval for a Poisson mean given an observed count o:
 * lo = Gamma^-1(a/2; o), hi = Gamma^-1(1-a/2; o+1), lo = 0 when o = 0. Same as
 * R's poisson.test(o)$conf.int. o need not be an integer (a noisy count). */
int px_kpi_poisson_exact(double o, double conf, double *lo, double *hi);

/* Byar's approximation to the exact Poisson limits (Breslow & Day 1987, vol. II,
 * eq. 2.17). Relative error against the exact limits: < 1e-4 (95%) and < 1e-3
 * (99.8%) at 50 events or more, 0.7% (95%) at 5 events, 48% at 1 event. */
int px_kpi_poisson_byar(double o, double conf, double *lo, double *hi);

typedef enum { PX_KPI_CI_EXACT, PX_KPI_CI_BYAR } px_kpi_ci_method;
const char *px_kpi_ci_method_name(px_kpi_ci_method m);   /* "exact-poisson", "byar" */

/* Default event count from which O/E intervals use Byar instead of the exact
 * limits (see px_kpi_poisson_byar for the accuracy this buys). */
#define PX_KPI_BYAR_MIN_EVENTS 50

/* Observed/expected ratio o/e with the Poisson interval of o divided by e (e is
 * treated as fixed: it comes from the risk model, not from this unit's data).
 * Exact when o < byar_min_events, Byar otherwise; *method says which.
 * Returns 0, or PX_EINVAL when e <= 0 or o < 0. */
int px_kpi_oe(double o, double e, double conf, double byar_min_events, px_ci *out, px_kpi_ci_method *method);

/* Mean of n values from their sum and sum of squares with the Student-t interval
 * (R's t.test(x)$conf.int). n >= 2, else PX_EINVAL. */
int px_kpi_mean_t(double n, double sum, double sumsq, double conf, px_ci *out);

/* Ratio of sums R = sum(y) / sum(e) of a continuous outcome (LOS) with its
 * expectation from a model, from the sufficient sums over the unit's n rows.
 * Interval: exp(log R +- z se), se = sqrt(sum (y - R e)^2) / sum(y): the robust
 * (HC0 sandwich) standard error of the intercept of a log-link quasi-Poisson GLM
 * of y with offset log(e) and no other term, whose estimate is exactly log R.
 * Valid whatever the variance of y (LOS is over-dispersed). PX_EINVAL when
 * sum_y <= 0 or sum_e <= 0. */
int px_kpi_ratio_robust(double n, double sum_y, double sum_e, double sum_yy, double sum_ye, double sum_ee,
                        double conf, px_ci *out);

/* Empirical-Bayes (reliability-adjusted) smoothing in the manner of the AHRQ QI
 * software (Quality Indicator Empirical Methods, AHRQ/Battelle 2011, "reliability
 * weight"): smoothed_i = w_i r_i + (1 - w_i) target, w_i = s2 / (s2 + v_i), where
 * r_i is unit i's risk-adjusted rate, v_i its noise variance and s2 the signal
 * (between-unit) variance, estimated from the units by the DerSimonian-Laird
 * (1986) method of moments and floored at 0 (then every rate shrinks to the target).
 * Units with v_i <= 0 or non-finite r_i are skipped (smoothed and weight NAN) and
 * do not enter s2. smoothed, weight: k values each. *signal_var may be NULL.
 * Returns 0, or PX_EINVAL when k = 0. */
int px_kpi_eb_smooth(const double *rate, const double *noise_var, size_t k, double target, double *smoothed,
                     double *weight, double *signal_var);

/* Funnel-plot control limits (Spiegelhalter 2005, Stat Med 24:1185, appendix A)
 * for an O/E ratio with target 1 at precision e (expected events): the exact
 * Poisson quantiles of Poisson(e) with his interpolation between integers, r - a
 * with a = (F(r) - p) / (F(r) - F(r-1)), divided by e. phi > 1 widens them
 * multiplicatively around the target (Spiegelhalter 2005, section 5.1:
 * 1 + (limit - 1) sqrt(phi)); pass phi = 1 for none. conf: e.g. 0.95, 0.998. */
int px_kpi_funnel_oe(double e, double conf, double phi, double *lo, double *hi);

/* The same for a proportion with target t at precision n (binomial quantiles,
 * interpolated). */
int px_kpi_funnel_prop(double n, double t, double conf, double phi, double *lo, double *hi);

/* Normal-approximation funnel limits target +- z sqrt(phi * unit_var / n) for a
 * ratio of continuous outcomes (LOS O/E) whose per-row variance (on the ratio's
 * scale) is unit_var. */
int px_kpi_funnel_normal(double n, double target, double unit_var, double conf, double phi, double *lo,
                         double *hi);

/* ---- the statistics of one KPI cell (unit x measure x period) ---------------- */

/* The flag rule: a unit is "worse" than expected when the whole interval of its
 * ratio to expected (O/E, or the hierarchical standardized ratio) lies above 1,
 * "better" when it lies below 1, else "no_different" (also when a limit is NaN).
 * Static strings. Suppression (too few cases) is the caller's, before this. */
const char *px_kpi_flag(double lo, double hi);

/* Noise variance of a unit's risk-standardized rate RSR = (O/E) ref for the
 * empirical-Bayes smoothing (px_kpi_eb_smooth), in the rate's units squared.
 * Binary measures: the model's own Bernoulli variance of O, sum p(1-p) = vpq
 * (as AHRQ's QI software does), so ref^2 vpq / E^2; NAN when E <= 0. */
double px_kpi_eb_var_binary(double ref, double vpq, double e);
/* Continuous measures (LOS): from the upper limit of O/E's robust log-scale
 * interval at level conf (px_kpi_ratio_robust), se(log O/E) = log(hi / oe) / z,
 * z = Phi^-1(1/2 + conf/2), and the delta method: ref^2 oe^2 se^2. NAN when the
 * interval is missing or has no width. */
double px_kpi_eb_var_ratio(double ref, double oe, double oe_hi, double conf);

/* The per-stay residual variance of LOS on the O/E scale, from the system cell's
 * sums (n stays, sum e, sum y^2, sum y e, sum e^2): sum (y - e)^2 / n / ebar^2 with
 * ebar = sum e / n, floored at 0. The variance px_kpi_funnel_normal uses (a unit of
 * n stays: O/E ~ 1 +- z sqrt(phi var / n)) and the z-scores of the over-dispersion
 * factor. NAN when n <= 0 or sum e <= 0. */
double px_kpi_los_funnel_var(double n, double sum_e, double sum_yy, double sum_ye, double sum_ee);

/* Spiegelhalter's (2005, section 5.1) multiplicative over-dispersion factor: the
 * mean of the squared z-scores after Winsorizing them at the winsor and 1-winsor
 * quantiles (he uses 0.10). NAN z are skipped. Returns phi (>= 0), NAN when no
 * z is finite. The caller applies it only when phi > 1. */
double px_kpi_overdispersion(const double *z, size_t k, double winsor);

/* Laplace mechanism for a differentially private release (Dwork et al. 2006):
 * a count with sensitivity 1 gets noise of scale 1/epsilon. The noise comes from
 * a documented, seeded generator (splitmix64 seeding xoshiro256**, 53-bit
 * uniforms u in (0,1), inverse CDF -b sgn(u-1/2) log(1 - 2|u-1/2|)): the same
 * seed gives the same noise, so a release can be reproduced and audited. */
/* The generator is engine's px_rng (px_rng_seed; px_rng_unif_pos for u). */
double px_kpi_laplace(px_rng *r, double scale);  /* one Laplace(0, scale) draw */
/* A released count: max(0, round(x + Laplace(sensitivity / epsilon))). Rounding
 * and clamping are post-processing and keep the guarantee. */
double px_kpi_dp_count(px_rng *r, double x, double sensitivity, double epsilon);

/* ---- measures and units ----------------------------------------------------- */

typedef enum {
    PX_KPI_VOLUME,       /* discharges (all stays) */
    PX_KPI_READMISSION,  /* 30-day readmission rate, risk model 'readmission' */
    PX_KPI_MORTALITY,    /* 30-day mortality rate, risk model 'mortality' */
    PX_KPI_LOS,          /* average length of stay in days, risk model 'los' */
    PX_KPI_COST,         /* cost per encounter, crude */
    PX_KPI__COUNT
} px_kpi_measure;

const char *px_kpi_measure_name(px_kpi_measure m);   /* "volume", "readmission", ... */
int px_kpi_measure_parse(const char *s, px_kpi_measure *m);  /* 0 or PX_EINVAL */

/* ---- computing and storing (compute.c) ------------------------------------- */

/* Period kinds: bit flags. A period is labelled "2023-06", "2023-Q2", "2023" or
 * "all" (every discharge in the data). Stays belong to the period of their
 * discharge date (as CMS assigns index stays). */
enum { PX_KPI_MONTH = 1, PX_KPI_QUARTER = 2, PX_KPI_YEAR = 4, PX_KPI_ALL = 8 };
/* Parses "month", "quarter", "year", "all" or a comma list of them into flags. */
int px_kpi_periods_parse(const char *s, int *flags);

/* What a unit's outcomes are compared with. */
typedef enum {
    PX_KPI_REF_FACILITY,   /* explicit option: predictions shifted to the DerSimonian-Laird "average
                            * facility" (unstable when most facilities have few stays) */
    PX_KPI_REF_POOLED      /* default: the risk model's predictions exactly as they are (indirect
                            * standardization; cannot invert a system-level headline) */
} px_kpi_reference;

typedef struct px_kpi_params {
    int periods;                 /* PX_KPI_* flags (default: all four) */
    const char *model_ref[3];    /* registry references for readmission, mortality,
                                  * los ("3", "v3", "champion", ...); NULL = "champion" */
    double conf;                 /* interval level (default 0.95) */
    int min_cases;               /* cells with fewer cases are suppressed (default 25, CMS) */
    double byar_min_events;      /* see px_kpi_oe (default PX_KPI_BYAR_MIN_EVENTS) */
    int overdispersion;          /* 1: funnel limits widened by Spiegelhalter's phi when > 1 */
    px_kpi_reference reference;  /* default PX_KPI_REF_POOLED */
    int no_hierarchical;         /* 1: facilities by O/E only, even where a model stores a hierarchical model */
    int force;                   /* 1: compute even if an identical run is stored */
    int allow_failed_gates;      /* 1: adjust with a risk model that failed its quality gates
                                  * (default 0: such a model adjusts nothing; see below) */
    int score_in_c;              /* 1: score every model in C through the feature reader (the path SVMs
                                  * always take) instead of the model compiled to SQL; same results to
                                  * rounding: for comparing the two (default 0) */
} px_kpi_params;

px_kpi_params px_kpi_default_params(void);

typedef struct px_kpi_run_info {
    long long run_id;            /* kpi.runs row (the existing one when unchanged) */
    int unchanged;               /* 1: identical inputs and method already computed; nothing stored */
    int model_version[3];        /* readmission, mortality, los */
    double reference_shift[3];   /* the shift applied to each model's predictions (0: none) */
    int hierarchical[3];         /* 1: the model's stored hierarchical model gave the facilities' sr */
    long long encounters;        /* stays in the warehouse */
    long long scored;            /* feature-table rows scored, all models */
    long long results;           /* rows written to kpi.results */
    double seconds, seconds_score, seconds_sql;   /* wall time: total; models prepared (compiled to SQL,
                                                   * or scored in C and stored); the one SQL pass that scores
                                                   * and aggregates to the finest cell */
    double seconds_inputs;       /* reading the inputs, models and fingerprint; recording the run */
    double seconds_stats;        /* roll-ups, intervals, smoothing, hierarchical ratios (C) */
    double seconds_store;        /* COPY of kpi.results, the run's totals and predictions SQL, commit */
    int scored_in_c[3];          /* 1: the model was scored in C (an SVM, or score_in_c), not in SQL */
    char summary[512];
    int crude[3];                /* 1: the measure was computed crude (no usable risk model) */
    int skipped[3];              /* 1: the measure was not computed (no model and no feature table) */
    char notes[1024];            /* why each crude or skipped measure is so, "; "-separated; "" if none */
} px_kpi_run_info;

/* Risk models and their quality gates: a measure whose champion is missing, or
 * failed its registration gates (registry.versions.gates passed = false, not
 * accepted with --accept-failed-gates), is computed crude: observed counts and
 * crude rates with their intervals, no expected count, O/E or risk-standardized
 * rate, flag 'not_adjusted', no model named, and a method saying why. The other
 * measures are computed as usual. A model named explicitly (model_ref) that is
 * missing is an error; one that failed its gates is refused (PX_EINVAL naming the
 * gates) unless allow_failed_gates. Without a model, the measure's built-in
 * feature table gives the observed outcomes; when it does not exist either, the
 * measure is skipped (info->skipped). */

/* Computes every measure for every period of the requested kinds and unit
 * (system, facility, department) and stores them under a new kpi.runs row in one
 * transaction. Expected counts are the sums of the risk model's predictions
 * (indirect standardization, the default for every O/E and for the system-level
 * headline: on the rows the model was fitted on, expected = observed up to
 * calibration-in-the-large). Facilities additionally get the CMS hierarchical
 * standardized ratio (sr, srsr) where the model version stores a hierarchical
 * model (hierarchical.json, fitted at training), applied without refitting
 * (kpi/hier.c); their flag then comes from the sr interval (oe_flag keeps the
 * O/E one); kpi.results.adjustment names the method of each row. With
 * PX_KPI_REF_FACILITY (an explicit option) each prediction is first shifted by
 * the DerSimonian-Laird mean of the facilities' intercepts (stored as
 * reference_shift). Every interval treats the models' coefficients as known. Needs the feature tables and a registered version of each risk
 * model; a model that is not registered is an error naming it (measures cannot
 * be risk-adjusted without one). Returns 0; PX_ENOTHING when an identical run
 * exists (same model versions, batches, feature builds and method; info->run_id
 * names it); or a negative error, with nothing stored. */
int px_kpi_compute(PGconn *c, const px_config *cfg, const px_kpi_params *p, px_kpi_run_info *info, px_err *e);

/* ---- the report (report.c) ------------------------------------------------- */

typedef struct px_kpi_report_params {
    const char *period;          /* "2023-06", "2023-Q2", "2023", "all", or a kind
                                  * ("month", "quarter", "year": the latest complete one) */
    long long run_id;            /* 0: the latest run holding that period */
    const char *html_path;       /* NULL: no HTML */
    const char *json_path;       /* NULL: no JSON */
    const char *csv_path;        /* NULL: no CSV */
    double target[PX_KPI__COUNT];/* headline targets on each measure's scale (rate, days,
                                  * dollars); NAN: the case-mix expected value (E/n) */
    double dp_epsilon;           /* > 0: a differentially private release (counts noised) */
    uint64_t dp_seed;
    const char *targets_path;    /* NULL, or a JSON / CSV file of targets (measure, value,
                                  * direction, source); overrides target[] per measure */
    const char *benchmarks_dir;  /* NULL, or a folder of public CMS files (Hospital Compare
                                  * outcome-of-care-measures.csv, HRRP): national rates */
} px_kpi_report_params;

px_kpi_report_params px_kpi_report_default_params(void);

typedef struct px_kpi_report_info {
    long long run_id;
    char period[32];
    char period_kind[16];
    int units;                   /* facilities in the league table */
    int flagged_worse, flagged_better;   /* facility x measure cells */
    int suppressed;              /* facility x measure cells under min_cases */
} px_kpi_report_info;

/* Writes the requested outputs for one period of a stored run. Files are
 * written atomically. Returns 0, PX_ENOTFOUND when no run holds the period
 * (message names it), PX_EIO, PX_EDB. */
int px_kpi_report(PGconn *c, const px_kpi_report_params *p, px_kpi_report_info *info, px_err *e);

/* ---- the newest run, read by other folders (latest.c) ------------------- */

/* The KPIs of the newest run of px_kpi_compute as JSON text the caller frees:
 * {"run_id", "computed_at", "kpis": [rows of kpi.latest_results]}, filtered by
 * measure, period (a period or a kind) and unit (a unit or a kind) where not NULL
 * or "", ordered by measure, period start, period kind, unit type, unit, at most
 * limit rows. 0; PX_ENOTFOUND when no KPIs have been computed (or the warehouse
 * has no KPI tables); PX_EDB. */
int px_kpi_latest(PGconn *c, const char *measure, const char *period, const char *unit, int limit, char **json,
                  px_err *e);

#endif
