/* test_kpi_cells.c: the statistics of one KPI cell (kpi/stats.c) that px_kpi_compute
 * applies to every unit x measure x period: the flag rule, the empirical-Bayes
 * noise variance (binary: the model's Bernoulli variance; LOS: the robust
 * interval's delta-method variance) with the group's shrinkage, and the LOS
 * funnel variance and limits. Reference values from R computed on the stays
 * themselves (kpi_cell_ref.R -> kpi_cell_ref.txt); the C side gets the stays'
 * sums, as the aggregation query gives them, or sums the stays itself.
 * Tolerances: relative 1e-12 for closed forms on the same sums, 1e-9 where the
 * C side sums the stays (another order of additions), 1e-7 where R's glm
 * iterates (its deviance converges to 1e-8), absolute 1e-12 near zero, exact for flags.
 * Usage: test_kpi_cells DIR (the directory holding kpi_cell_ref.txt). */
#include "kpi/kpi.h"
#include "tests/unit/check.h"
#include "tests/unit/refcheck.h"
#include <gsl/gsl_errno.h>
#include <stdlib.h>


enum { L_FLAG, L_EBVAR_BIN, L_EBGROUP_BIN, L_EBVAR_LOS, L_LOSFUNNEL, L__COUNT };
static int lines_checked[L__COUNT];
static int flags_seen[3];   /* better, no different, worse: every outcome of the rule is exercised */

/* The binary units of the ebvar_bin lines, kept for the ebgroup_bin line. */
static double unit_rsr[64], unit_var[64];
static int nunits;

static int flag_code(const char *f)
{
    return strcmp(f, "worse") == 0 ? 1 : strcmp(f, "better") == 0 ? -1 : strcmp(f, "no_different") == 0 ? 0 : 99;
}

static void check_line(const char *tag, const double *v, int n)
{
    px_ci ci;
    double lo, hi;
    if (strcmp(tag, "flag") == 0 && n == 6) {
        /* o e conf | R's exact lo hi, flag */
        px_kpi_ci_method m;
        CHECK_INT(px_kpi_oe(v[0], v[1], v[2], PX_KPI_BYAR_MIN_EVENTS, &ci, &m), 0);
        CHECK_INT(m, PX_KPI_CI_EXACT);
        CHECK_REL(ci.lo, v[3], 1e-7);
        CHECK_REL(ci.hi, v[4], 1e-7);
        int want = (int)v[5], got = flag_code(px_kpi_flag(ci.lo, ci.hi));
        CHECK_INT(got, want);
        /* the rule itself on R's own limits */
        CHECK_INT(flag_code(px_kpi_flag(v[3], v[4])), want);
        if (want >= -1 && want <= 1) flags_seen[want + 1]++;
        lines_checked[L_FLAG]++;
    } else if (strcmp(tag, "ebvar_bin") == 0 && n >= 5 && n == 4 + (int)v[2]) {
        /* ref o nstays | var | p_1 .. p_n: the C side sums the stays as the aggregation does */
        double ref = v[0], o = v[1], e = 0, vpq = 0;
        for (int i = 0; i < (int)v[2]; i++) e += v[4 + i], vpq += v[4 + i] * (1 - v[4 + i]);
        double var = px_kpi_eb_var_binary(ref, vpq, e);
        CHECK_REL(var, v[3], 1e-9);
        if (nunits < 64) unit_rsr[nunits] = o / e * ref, unit_var[nunits] = var, nunits++;
        lines_checked[L_EBVAR_BIN]++;
    } else if (strcmp(tag, "ebgroup_bin") == 0 && n >= 3 && n == 3 + (int)v[0]) {
        /* k ref s2 | smoothed_1 .. smoothed_k, for the units of the ebvar_bin lines before it */
        int k = (int)v[0];
        CHECK_INT(nunits, k);
        if (nunits != k) return;
        double sm[64], w[64], s2 = -1;
        CHECK_INT(px_kpi_eb_smooth(unit_rsr, unit_var, (size_t)k, v[1], sm, w, &s2), 0);
        CHECK_REL(s2, v[2], 1e-9);
        for (int i = 0; i < k; i++) CHECK_REL(sm[i], v[3 + i], 1e-9);
        CHECK(v[2] > 0);   /* the data carry signal: the shrinkage is partial, not to the target */
        lines_checked[L_EBGROUP_BIN]++;
    } else if (strcmp(tag, "ebvar_los") == 0 && n == 9) {
        /* n sum_y sum_e sum_yy sum_ye sum_ee conf ref | var */
        CHECK_INT(px_kpi_ratio_robust(v[0], v[1], v[2], v[3], v[4], v[5], v[6], &ci), 0);
        double var = px_kpi_eb_var_ratio(v[7], ci.est, ci.hi, v[6]);
        CHECK_REL(var, v[8], 1e-7);
        lines_checked[L_EBVAR_LOS]++;
    } else if (strcmp(tag, "losfunnel") == 0 && n == 11) {
        /* n sum_e sum_yy sum_ye sum_ee n_unit conf phi | var lo hi */
        double var = px_kpi_los_funnel_var(v[0], v[1], v[2], v[3], v[4]);
        CHECK_REL(var, v[8], 1e-9);
        CHECK_INT(px_kpi_funnel_normal(v[5], 1, var, v[6], v[7], &lo, &hi), 0);
        CHECK_REL(lo, v[9], 1e-9);
        CHECK_REL(hi, v[10], 1e-9);
        lines_checked[L_LOSFUNNEL]++;
    } else {
        fprintf(stderr, "unknown reference line '%s' with %d values\n", tag, n);
        check_failures++;
    }
}

static void ref_line(FILE *f, const char *tag, const double *v, int n)
{
    (void)f;
    check_line(tag, v, n);
}

/* What the reference file cannot show: the edges of each function. */
static void check_edges(void)
{
    const char *tag = "edges";
    /* NaN limits (no interval): never a flag */
    CHECK_STR(px_kpi_flag(NAN, NAN), "no_different");
    CHECK_STR(px_kpi_flag(NAN, 0.5), "better");
    CHECK_STR(px_kpi_flag(1.0, 2.0), "no_different");   /* a limit at exactly 1 is not beyond it */
    CHECK_STR(px_kpi_flag(0.5, 1.0), "no_different");
    CHECK_STR(px_kpi_flag(1.0000001, 3), "worse");
    /* no expected events: no variance (the unit is skipped by the smoothing) */
    CHECK(isnan(px_kpi_eb_var_binary(0.15, 0, 0)));
    CHECK_REL(px_kpi_eb_var_binary(0.2, 3, 6), 0.04 * 3 / 36, 1e-15);
    /* an interval without width or estimate: no variance */
    CHECK(isnan(px_kpi_eb_var_ratio(4, 1.1, 1.1, 0.95)));
    CHECK(isnan(px_kpi_eb_var_ratio(4, NAN, 1.3, 0.95)));
    /* exp(z) upper limit at O/E 1: se = 1, var = ref^2 */
    CHECK_REL(px_kpi_eb_var_ratio(3, 1, exp(1.959963984540054), 0.95), 9, 1e-12);
    /* the funnel variance needs stays and expected days; a perfect fit has none */
    CHECK(isnan(px_kpi_los_funnel_var(0, 5, 1, 1, 1)));
    CHECK(isnan(px_kpi_los_funnel_var(10, 0, 1, 1, 1)));
    CHECK_REL(px_kpi_los_funnel_var(2, 6, 18, 18, 18), 0, 0);   /* y = e = 3 for both stays */
    CHECK_REL(px_kpi_los_funnel_var(2, 6, 18 + 1e-13, 18, 18 - 2e-13), 0, 0);   /* rounding below 0: floored */
}

int main(int argc, char **argv)
{
    gsl_set_error_handler_off();
    const char *dir = argc > 1 ? argv[1] : "tests/unit";
    char path[4096];
    snprintf(path, sizeof path, "%s/kpi_cell_ref.txt", dir);
    if (ref_read(path, ref_line) != 0) return 1;
    for (int i = 0; i < L__COUNT; i++) CHECK(lines_checked[i] > 0);
    for (int i = 0; i < 3; i++) CHECK(flags_seen[i] > 0);
    check_edges();
    return check_report("test_kpi_cells");
}
