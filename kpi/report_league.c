/* report_league.c: the report's league table, forest plot and funnel plot of one
 * risk measure for one unit type (facilities or departments): which units are
 * listed when not all fit, their order, and the funnel's control limits. */
#include "kpi/report_int.h"
#include <stdlib.h>

/* A league table lists every unit with enough cases up to this many, else the
 * flagged ones (a crude measure, without flags: its largest units). */
#define LEAGUE_ALL_MAX 100
#define LEAGUE_FLAG_LISTED 100
#define LEAGUE_CRUDE_LISTED 50

/* How strongly a unit claims a row when not all can be listed: flagged units by
 * how far their ratio lies from 1; for a crude measure, its cases; else -1 (not listed). */
static double league_score(const row *x, int crude)
{
    if (crude) return x->n;
    if (strcmp(x->flag, "worse") != 0 && strcmp(x->flag, "better") != 0) return -1;
    double r = strcmp(x->adjustment, "hierarchical") == 0 && isfinite(x->sr) ? x->sr : x->oe;
    return isfinite(r) && r > 0 ? fabs(log(r)) : 0;
}

static int cmp_dbl_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int cmp_oe_desc(const void *a, const void *b)
{
    const row *x = *(const row *const *)a, *y = *(const row *const *)b;
    if (x->suppressed != y->suppressed) return x->suppressed - y->suppressed;
    double u = isfinite(x->oe) ? x->oe : -1, v = isfinite(y->oe) ? y->oe : -1;
    if (u != v) return u < v ? 1 : -1;
    return strcmp(x->unit, y->unit);
}

static double lim_oe(double x, double conf, int upper, const void *arg)
{
    double lo, hi, phi = *(const double *)arg;
    if (px_kpi_funnel_oe(x, conf, phi, &lo, &hi) != 0) return NAN;
    return upper ? hi : lo;
}

static double lim_normal(double x, double conf, int upper, const void *arg)
{
    const double *a = arg;   /* phi, per-stay variance */
    double lo, hi;
    if (px_kpi_funnel_normal(x, 1, a[1], conf, a[0], &lo, &hi) != 0) return NAN;
    return upper ? hi : lo;
}

/* League table, forest plot and funnel plot of one risk measure, for one unit type. */
int kpi_league(px_buf *b, const rows *rs, const run_info *ri, int m, int utype, int *units, int *suppressed,
                  int dp)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->n; i++)
        n += rs->v[i].measure == m && rs->v[i].utype == utype && strcmp(rs->v[i].period, ri->period) == 0;
    const char *what = utype == 1 ? "facility" : "department";
    if (n == 0) {
        /* the period holds no unit of this measure: say so rather than drop the table */
        px_buf_printf(b, "<h3 id='league-%s-%s'>%s by %s</h3><p class='sub missing' data-measure='%s'>No %s data for "
                         "this measure in period ",
                      px_kpi_measure_name(m), what, kpi_mlabel[m], what, px_kpi_measure_name(m), what);
        kpi_html_esc(b, ri->period);
        px_buf_adds(b, ".</p>");
        return 0;
    }
    const row **v = calloc(n, sizeof *v);
    kpi_point *pt = calloc(n, sizeof *pt);
    if (!v || !pt) {
        free(v), free(pt);
        return PX_ENOMEM;
    }
    /* the units reported: named ones (not the department of stays without one);
     * suppressed ones are counted, not listed; the table lists every unit with
     * enough cases while they are few, else the flagged ones (the full table is in
     * the CSV and JSON) */
    n = 0;
    int nosup = 0, sup = 0, unnamed = 0, nflag = 0;
    double unnamed_n = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (x->measure != m || x->utype != utype || strcmp(x->period, ri->period) != 0) continue;
        if (!kpi_named_unit(x)) {
            unnamed++, unnamed_n += isfinite(x->n) ? x->n : 0;
            continue;
        }
        if (utype == 1) (*units)++;
        if (x->suppressed) {
            sup++;
            continue;
        }
        v[n++] = x;
        nosup++;
        nflag += !strcmp(x->flag, "worse") || !strcmp(x->flag, "better");
    }
    if (utype == 1) *suppressed += sup;
    qsort(v, n, sizeof *v, cmp_oe_desc);
    int all_rows = nosup <= LEAGUE_ALL_MAX;
    /* beyond LEAGUE_ALL_MAX units: the flagged ones, the LEAGUE_FLAG_LISTED farthest
     * from 1 at most; a crude measure has no flags, so its LEAGUE_CRUDE_LISTED largest */
    int crude = kpi_measure_crude(ri, m);
    double cut = -INFINITY;
    if (!all_rows) {
        double *sc = malloc(n * sizeof *sc);
        if (!sc) {
            free(v), free(pt);
            return PX_ENOMEM;
        }
        for (size_t i = 0; i < n; i++) sc[i] = league_score(v[i], crude);
        qsort(sc, n, sizeof *sc, cmp_dbl_desc);
        size_t k = crude ? LEAGUE_CRUDE_LISTED : LEAGUE_FLAG_LISTED;
        cut = fmax(0, sc[(k < n ? k : n) - 1]);
        free(sc);
    }
#define LISTED(x) (all_rows || league_score((x), crude) >= cut)
    size_t nrow = 0;
    for (size_t i = 0; i < n; i++) nrow += LISTED(v[i]);
    px_buf_printf(b, "<h3 id='league-%s-%s'>%s by %s</h3>", px_kpi_measure_name(m), what, kpi_mlabel[m], what);
    px_buf_printf(b, "<p class='sub counts' data-measure='%s' data-unit-type='%s' data-units='%d' data-listed='%zu' "
                     "data-suppressed='%d' data-flagged='%d'>%d %s with enough cases",
                  px_kpi_measure_name(m), what, nosup + sup, nrow, sup, nflag, nosup,
                  nosup == 1 ? what : utype == 1 ? "facilities" : "departments");
    if (!all_rows && crude)
        px_buf_printf(b, "; not risk-adjusted, so none is flagged: listed here are the %zu with the most cases, the "
                         "other %d are in the CSV and JSON (--csv, --json)", nrow, nosup - (int)nrow);
    else if (!all_rows && (int)nrow == nflag)
        px_buf_printf(b, "; listed here are the %zu flagged worse or better than expected, the %d no different "
                         "from expected are in the CSV and JSON (--csv, --json)", nrow, nosup - (int)nrow);
    else if (!all_rows)
        px_buf_printf(b, "; listed here are the %zu flagged worse or better that lie farthest from expected (of %d "
                         "flagged), the other %d are in the CSV and JSON (--csv, --json)", nrow, nflag,
                      nosup - (int)nrow);
    if (sup)
        px_buf_printf(b, "; %d with fewer than %.0f cases are suppressed (counted, not listed)", sup,
                      cJSON_GetNumberValue(cJSON_GetObjectItem(ri->method, "min_cases")));
    if (unnamed) {
        char un[32];
        kpi_thousands(un, sizeof un, unnamed_n);
        px_buf_printf(b, "; %s stays without a recorded department are not reported as a department", un);
    }
    px_buf_adds(b, ".</p>");
    size_t np = 0;
    for (size_t i = 0; i < n; i++)
        if (LISTED(v[i]) && isfinite(v[i]->oe))
            pt[np++] = (kpi_point){v[i]->unit, v[i]->fx, v[i]->oe, v[i]->oelo, v[i]->oehi, v[i]->flag};
    if (np) {
        char aria[160];
        snprintf(aria, sizeof aria, "league table of %s by %s: O/E with 95%% intervals", kpi_mlabel[m], what);
        kpi_svg_forest(b, aria, pt, np, 1);
    }
    px_buf_printf(b, "<table class='league' data-measure='%s' data-unit-type='%s'><thead><tr><th class='u'>%s</th>"
                     "<th>cases</th><th>observed</th><th>expected</th><th>crude</th><th>expected rate</th>"
                     "<th>O/E (95%% CI)</th><th>risk-standardized (95%% CI)</th>"
                     "<th>standardized ratio, hierarchical (95%% CI)</th><th>smoothed (EB)</th>"
                     "<th class='u'>assessment</th></tr></thead><tbody>",
                  px_kpi_measure_name(m), what, what);
    for (size_t i = 0; i < n; i++) {
        const row *x = v[i];
        if (!LISTED(x)) continue;
        px_buf_printf(b, "<tr class='%s' data-unit='", x->flag);
        kpi_html_esc(b, x->unit);
        px_buf_adds(b, "'");
        kpi_data_attr(b, "n", x->n);
        kpi_data_attr(b, "observed", x->o);
        kpi_data_attr(b, "expected", x->e);
        kpi_data_attr(b, "rate", x->rate);
        kpi_data_attr(b, "oe", x->oe);
        kpi_data_attr(b, "oe-lo", x->oelo);
        kpi_data_attr(b, "oe-hi", x->oehi);
        kpi_data_attr(b, "rsr", x->rsr);
        kpi_data_attr(b, "eb", x->eb);
        kpi_data_attr(b, "sr", x->sr);
        kpi_data_attr(b, "sr-lo", x->srlo);
        kpi_data_attr(b, "sr-hi", x->srhi);
        px_buf_printf(b, " data-adjustment='%s' data-flag='%s'><td class='u'>", x->adjustment, x->flag);
        kpi_html_esc(b, x->unit);
        char cases[32];
        kpi_thousands(cases, sizeof cases, x->n);
        px_buf_printf(b, "</td><td class='n'>%s</td>", cases);
        if (x->suppressed) {
            px_buf_printf(b, "<td colspan='8'>%s</td><td class='u f'>%s</td></tr>",
                          dp && strcmp(x->flag, "withheld") == 0 ? "not released in the private release"
                                                                  : "suppressed: fewer than 25 cases",
                          kpi_flag_words(x->flag));
            continue;
        }
        char o[64], e[64], r[64], er[64], oe[96], rsr[256], eb[64], a[64], z[64];
        kpi_fmt_num(o, sizeof o, m == PX_KPI_LOS ? "%.0f" : "%.0f", x->o);
        kpi_fmt_num(e, sizeof e, "%.1f", x->e);
        kpi_fmt_val(r, sizeof r, m, x->rate);
        kpi_fmt_val(er, sizeof er, m, x->erate);
        if (isfinite(x->oe))
            snprintf(oe, sizeof oe, "<span class='oe'>%.2f</span> (%.2f &ndash; %.2f)", x->oe, x->oelo, x->oehi);
        else
            snprintf(oe, sizeof oe, "&ndash;");
        kpi_fmt_val(a, sizeof a, m, x->rsrlo);
        kpi_fmt_val(z, sizeof z, m, x->rsrhi);
        char rv[64];
        kpi_fmt_val(rv, sizeof rv, m, x->rsr);
        snprintf(rsr, sizeof rsr, "%s (%s &ndash; %s)", rv, a, z);
        kpi_fmt_val(eb, sizeof eb, m, x->eb);
        char sr[128];
        if (isfinite(x->sr))
            snprintf(sr, sizeof sr, "%.2f (%.2f &ndash; %.2f)", x->sr, x->srlo, x->srhi);
        else
            snprintf(sr, sizeof sr, "&ndash;");
        px_buf_printf(b, "<td>%s</td><td>%s</td><td class='rate'>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>"
                         "<td>%s</td><td class='u f'>%s%s</td></tr>",
                      o, e, r, er, oe, rsr, sr, eb, kpi_flag_words(x->flag),
                      strcmp(x->adjustment, "hierarchical") == 0 ? " (hierarchical)" : "");
    }
    px_buf_adds(b, "</tbody></table>");
    /* the funnel shows every facility with enough cases, not only those listed */
    np = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i]->oe)) pt[np++] = (kpi_point){v[i]->unit, v[i]->fx, v[i]->oe, v[i]->oelo, v[i]->oehi, v[i]->flag};
    if (utype == 1 && np && !dp) {
        /* the funnel of this measure: limits from the group's phi (and LOS variance) */
        double phi = isfinite(v[0]->phi) ? v[0]->phi : 1, arg[2] = {phi, NAN};
        for (size_t i = 0; i < n; i++)
            if (isfinite(v[i]->fvar)) arg[1] = v[i]->fvar;
        int rate = kpi_is_rate(m);
        px_buf_printf(b, "<h3 id='funnel-%s'>Funnel plot: %s by facility</h3><p class='sub'>Each dot is a facility; "
                         "points outside the dashed (95%%) or solid (99.8%%) control limits differ from expected "
                         "by more than chance at that %s (Spiegelhalter 2005)%s.</p>",
                      px_kpi_measure_name(m), kpi_mlabel[m], rate ? "number of expected events" : "number of stays",
                      phi > 1 ? "; the limits are widened for over-dispersion" : "");
        char aria[160];
        snprintf(aria, sizeof aria, "funnel plot of %s: O/E against %s", kpi_mlabel[m], rate ? "expected events" : "stays");
        if (rate)
            kpi_svg_funnel(b, aria, pt, np, lim_oe, &phi, "expected events (precision)");
        else if (isfinite(arg[1]))
            kpi_svg_funnel(b, aria, pt, np, lim_normal, arg, "stays (precision)");
    }
#undef LISTED
    free(v);
    free(pt);
    return 0;
}

