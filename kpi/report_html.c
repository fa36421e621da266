/* report_html.c: the report's HTML page: inline CSS, caution banners, headline
 * cards with sparklines, the flagged units, league tables (report_league.c),
 * trends and the methods section. Self-contained: no script, no network. */
#include "kpi/report_int.h"
#include <stdlib.h>
#include <time.h>

static const char css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;"
    "max-width:1100px;color:#1d2430;padding:0 16px;background:#fff}"
    "h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:32px 0 8px;border-bottom:2px solid #dde3ea;"
    "padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}p.sub{color:#5a6472;margin:0 0 16px}"
    ".cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #d5dbe3;border-radius:8px;padding:12px 14px;"
    "width:190px;background:#f7f9fb}.card .v{font-size:26px;font-weight:600;margin:4px 0}.card .l{font-size:13px;"
    "color:#4a5563}.card .s{font-size:12px;color:#4a5563}.ok{color:#1a7f37}.bad{color:#b42318}.neutral{color:#4a5563}"
    "table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}th,td{border-bottom:1px solid #e3e8ee;"
    "padding:4px 6px;text-align:right}th{background:#eef2f6}td.u,th.u{text-align:left}"
    "tr.worse td.f{color:#b42318;font-weight:600}tr.better td.f{color:#1a7f37;font-weight:600}"
    "tr.suppressed td{color:#8a94a3;font-style:italic}ul.flags li{margin:4px 0}"
    "svg{background:#fff;max-width:100%;height:auto}svg .grid{stroke:#e6eaef;stroke-width:1}"
    "svg .tick{font-size:10px;fill:#4a5563}svg .axis{font-size:11px;fill:#1d2430}"
    "svg .ref{stroke:#1d2430;stroke-width:1.2;stroke-dasharray:3 3}svg .ci{stroke:#5a6472;stroke-width:1.6}"
    "svg g.worse circle,svg circle.worse{fill:#b42318}svg g.better circle,svg circle.better{fill:#1a7f37}"
    "svg g.no_different circle,svg circle.no_different{fill:#3b6fb6}svg .lim95{fill:none;stroke:#d08c00;"
    "stroke-dasharray:5 4;stroke-width:1.4}svg .lim998{fill:none;stroke:#b42318;stroke-width:1.4}"
    "svg .band{fill:#3b6fb6;fill-opacity:.18;stroke:none}svg .line{fill:none;stroke:#3b6fb6;stroke-width:2}"
    "svg .expected{fill:none;stroke:#d08c00;stroke-width:1.6;stroke-dasharray:6 4}svg .pt{fill:#3b6fb6}"
    ".dp{border:2px solid #d08c00;background:#fff7e6;padding:8px 12px;border-radius:6px}"
    ".method p,.method li{font-size:14px;line-height:1.45}"
    /* the first screen (1280x800): title, cautions, cards, flagged units. The five cards fit
     * one row of the 1100-pixel column (5 x (190 + 2 x 10 + 2) + 4 x 8 = 1092): at 198 pixels
     * the fifth wrapped to a second row, and with full flagged lists (five a side and "more")
     * their end fell below 800 pixels */
    "body{margin:12px auto}h1{font-size:22px}#headline h2,#flagged h2{margin:10px 0 4px;font-size:17px}"
    "#headline p.sub,#flagged p.sub{font-size:12.5px;margin:0 0 6px}.cards{gap:8px}"
    ".card{width:190px;padding:8px 10px}.card .s{font-size:11.5px}.card .v{font-size:22px;margin:2px 0}.card.missing{background:#fbfbfb;"
    "border-style:dashed}.card svg{display:block;margin-top:4px}svg .spark{fill:none;stroke:#3b6fb6;stroke-width:1.5}"
    ".caution{border:2px solid #b42318;background:#fdecea;padding:4px 10px;border-radius:6px;margin:4px 0;"
    "font-size:12.5px}.card .spk{font-size:11px;color:#4a5563;margin-top:4px}.warn{color:#b42318;font-weight:600}.flagcols{display:grid;grid-template-columns:1fr 1fr;"
    "gap:16px}.flagcols h3{margin:4px 0;font-size:14px}ol.flags{margin:0;padding-left:22px;font-size:12.5px}"
    "ol.flags li{margin:2px 0}ol.flags li.more,ol.flags li.none{list-style:none;color:#4a5563}"
    "svg path.dots{fill:none;stroke:#3b6fb6;stroke-width:7;stroke-linecap:round}"
    "@media print{.card{break-inside:avoid}svg{break-inside:avoid}h2,h3{break-after:avoid}}";

/* Caution banners above the headline: a measure computed crude (its risk model is
 * missing or failed its quality gates), a champion whose holdout AUC interval
 * includes 0.5 or that had no holdout events. */
static int cautions(px_buf *b, PGconn *c, const run_info *ri)
{
    int n = 0;
    static const int risk[3] = {PX_KPI_READMISSION, PX_KPI_MORTALITY, PX_KPI_LOS};
    for (int k = 0; k < 3; k++) {
        cJSON *mj = cJSON_GetObjectItem(ri->models, kpi_risk_model[k]);
        if (!mj) continue;
        if (cJSON_IsTrue(cJSON_GetObjectItem(mj, "crude"))) {
            const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "adjustment"));
            px_buf_printf(b, "<p class='caution' data-caution='crude' data-measure='%s'><b>Caution: %s is not "
                             "risk-adjusted.</b> Its rates are crude (no expected count, O/E or flag): ",
                          px_kpi_measure_name(risk[k]), kpi_mlabel[risk[k]]);
            static const char pre[] = "crude, not risk-adjusted: ";
            if (why && strncmp(why, pre, sizeof pre - 1) == 0) why += sizeof pre - 1;
            kpi_html_esc(b, why && *why ? why : "its risk model is missing or failed its quality gates");
            px_buf_adds(b, ". Differences between units may reflect their case mix.</p>");
            n++;
            continue;
        }
        if (risk[k] == PX_KPI_LOS) continue;   /* a regression: no AUC */
        char ver[32];
        snprintf(ver, sizeof ver, "%d", (int)cJSON_GetNumberValue(cJSON_GetObjectItem(mj, "version")));
        px_reg_version_row vr;
        if (px_reg_version_info(c, kpi_risk_model[k], atoi(ver), &vr, NULL) == 0) {
            double auc = vr.auc, lo = vr.auc_lo, hi = vr.auc_hi, ev = vr.events;
            const char *why = NULL;
            char text[256];
            if (isfinite(ev) && ev == 0)
                why = "its holdout had no events, so its discrimination is unknown";
            else if (!isfinite(auc) || !isfinite(lo) || !isfinite(hi))
                why = "its holdout AUC has no interval";
            else if (lo <= 0.5 && hi >= 0.5) {
                snprintf(text, sizeof text, "its holdout AUC %.3f (95%% CI %.3f &ndash; %.3f) includes 0.5: it may "
                                            "not rank patients better than chance", auc, lo, hi);
                why = text;
            }
            if (why) {
                px_buf_printf(b, "<p class='caution' data-caution='auc' data-measure='%s'><b>Caution: the risk model "
                                 "of %s (version %s) is weak.</b> %s%s; expected counts and flags of this measure are "
                                 "uncertain.</p>",
                              px_kpi_measure_name(risk[k]), kpi_mlabel[risk[k]], ver, why, "");
                n++;
            }
        }
        px_reg_version_row_free(&vr);
    }
    return n;
}

/* The system's values of a measure over the periods of the report's kind (complete
 * periods and the report's own), for the sparkline; returns how many, *cur the
 * report's period. */
static size_t spark_values(const rows *rs, const run_info *ri, int m, double *y, size_t max, size_t *cur)
{
    size_t n = 0;
    *cur = (size_t)-1;
    for (size_t i = 0; i < rs->n && n < max; i++) {
        const row *v = &rs->v[i];
        if (v->measure != PX_KPI_VOLUME || v->utype != 0) continue;
        if (strcmp(v->period, ri->period) != 0 && strcmp(v->end, ri->last) > 0) continue;
        const row *x = kpi_find_row(rs, m, 0, NULL, v->period);
        if (strcmp(v->period, ri->period) == 0) *cur = n;
        y[n++] = !x ? NAN : m == PX_KPI_VOLUME ? x->n : x->rate;
    }
    return n;
}

static void headline(px_buf *b, const rows *rs, const run_info *ri, const px_kpi_report_params *p, const goals *g,
                     const char *prev)
{
    px_buf_adds(b, "<section id='headline'><h2>Headline KPIs</h2><p class='sub'>Whole system, period ");
    kpi_html_esc(b, ri->period);
    px_buf_adds(b, ": each value against what is <i>expected for the case mix</i> (the sum of the risk model's "
                   "predictions), against a <i>target</i> only where one was set");
    int anyb = 0;
    for (int m = 0; m < PX_KPI__COUNT; m++) anyb |= isfinite(g->bench[m][0].value) || isfinite(g->bench[m][1].value);
    if (anyb) px_buf_adds(b, ", and against the national rate (CMS)");
    px_buf_adds(b, ". Intervals are 95%.</p><div class='cards'>");
    for (int m = 0; m < PX_KPI__COUNT; m++) {
        const row *x = kpi_find_row(rs, m, 0, NULL, ri->period);
        if (x && strcmp(x->flag, "withheld") == 0) {
            px_buf_printf(b, "<div class='card missing' data-measure='%s' data-value='' data-withheld='1'>"
                             "<div class='l'>%s</div><div class='v'>&ndash;</div><div class='s'>withheld in the "
                             "private release (a sum without a small sensitivity)</div></div>",
                          px_kpi_measure_name(m), kpi_mlabel[m]);
            continue;
        }
        if (!x || (m != PX_KPI_VOLUME && !isfinite(x->rate) && !(x->n > 0))) {
            /* the period holds no value of this measure: say so, do not drop the card */
            px_buf_printf(b, "<div class='card missing' data-measure='%s' data-value='' data-missing='1'>"
                             "<div class='l'>%s</div><div class='v'>&ndash;</div><div class='s'>no data for "
                             "this measure in period ",
                          px_kpi_measure_name(m), kpi_mlabel[m]);
            kpi_html_esc(b, ri->period);
            px_buf_adds(b, m == PX_KPI_COST ? " (the extract records no costs)</div></div>" : "</div></div>");
            continue;
        }
        double v = m == PX_KPI_VOLUME ? x->n : x->rate;
        const goal *t = &g->target[m];
        char vs[64], lo[64], hi[64], ts[64];
        kpi_fmt_val(vs, sizeof vs, m, v);
        px_buf_printf(b, "<div class='card' data-measure='%s'", px_kpi_measure_name(m));
        kpi_data_attr(b, "value", v);
        kpi_data_attr(b, "lo", x->rlo);
        kpi_data_attr(b, "hi", x->rhi);
        kpi_data_attr(b, "expected", x->erate);
        kpi_data_attr(b, "target", t->value);
        kpi_data_attr(b, "national", isfinite(g->bench[m][0].value) ? g->bench[m][0].value : g->bench[m][1].value);
        px_buf_printf(b, "><div class='l'>%s</div><div class='v'>%s</div>", kpi_mlabel[m], vs);
        if (isfinite(x->rlo)) {
            kpi_fmt_val(lo, sizeof lo, m, x->rlo);
            kpi_fmt_val(hi, sizeof hi, m, x->rhi);
            px_buf_printf(b, "<div class='s'>95%% CI %s &ndash; %s</div>", lo, hi);
        }
        double l = isfinite(x->rlo) ? x->rlo : v, h = isfinite(x->rhi) ? x->rhi : v;
        if (isfinite(x->erate) && m != PX_KPI_VOLUME) {
            kpi_fmt_val(ts, sizeof ts, m, x->erate);
            const char *cls = "neutral", *word = "as expected within uncertainty";
            if (h < x->erate) cls = "ok", word = "below expected";
            if (l > x->erate) cls = "bad", word = "above expected";
            px_buf_printf(b, "<div class='s'>expected for the case mix %s: <span class='%s'>%s</span></div>", ts, cls,
                          word);
            if (isfinite(x->oe)) px_buf_printf(b, "<div class='s'>O/E %.2f (%.2f &ndash; %.2f)</div>", x->oe, x->oelo, x->oehi);
        } else if (kpi_measure_crude(ri, m)) {
            px_buf_adds(b, "<div class='s'><span class='warn'>crude: not risk-adjusted</span></div>");
        }
        if (isfinite(t->value)) {
            kpi_fmt_val(ts, sizeof ts, m, t->value);
            const char *cls = "neutral", *word = "on target within uncertainty";
            if (t->higher_better ? l > t->value : h < t->value) cls = "ok", word = "better than target";
            if (t->higher_better ? h < t->value : l > t->value) cls = "bad", word = "worse than target";
            px_buf_printf(b, "<div class='s tgt'>target %s (", ts);
            kpi_html_esc(b, t->source);
            px_buf_printf(b, "): <span class='%s'>%s</span></div>", cls, word);
        }
        for (int k = 0; k < 2; k++) {
            const goal *nb = &g->bench[m][k];
            if (!isfinite(nb->value)) continue;
            kpi_fmt_val(ts, sizeof ts, m, nb->value);
            const char *cls = "neutral", *word = "about the same";
            if (h < nb->value) cls = "ok", word = "lower";
            if (l > nb->value) cls = "bad", word = "higher";
            px_buf_printf(b, "<div class='s nat' title='");
            kpi_html_esc(b, nb->source);
            px_buf_printf(b, "'>national %s (%s): <span class='%s'>%s</span></div>", ts, k ? "HRRP" : "Hospital Compare",
                          cls, word);
        }
        const row *pr = prev ? kpi_find_row(rs, m, 0, NULL, prev) : NULL;
        if (pr) {
            double pv = m == PX_KPI_VOLUME ? pr->n : pr->rate;
            char ps[64];
            kpi_fmt_val(ps, sizeof ps, m, pv);
            px_buf_adds(b, "<div class='s'>previous period (");
            kpi_html_esc(b, prev);
            px_buf_printf(b, "): %s</div>", ps);
        }
        double y[512];
        size_t cur, ny = spark_values(rs, ri, m, y, 512, &cur);
        if (ny >= 2) {
            /* its axis: the first and last period it spans */
            const char *per[512];
            size_t np = 0;
            for (size_t i = 0; i < rs->n && np < 512; i++) {
                const row *w = &rs->v[i];
                if (w->measure == PX_KPI_VOLUME && w->utype == 0 &&
                    (strcmp(w->period, ri->period) == 0 || strcmp(w->end, ri->last) <= 0))
                    per[np++] = w->period;
            }
            px_buf_adds(b, "<div class='spk'>trend ");
            kpi_html_esc(b, per[0]);
            px_buf_adds(b, " &ndash; ");
            kpi_html_esc(b, per[np - 1]);
            px_buf_adds(b, "</div>");
            char aria[160];
            snprintf(aria, sizeof aria, "sparkline of %s by %s", kpi_mlabel[m], ri->kind);
            kpi_svg_spark(b, aria, y, ny, cur);
        }
        px_buf_adds(b, "</div>");
    }
    (void)p;
    px_buf_adds(b, "</div></section>");
}

static int cmp_flag_rank(const void *a, const void *b)
{
    const row *x = *(const row *const *)a, *y = *(const row *const *)b;
    int wx = strcmp(x->flag, "worse") == 0, wy = strcmp(y->flag, "worse") == 0;
    if (wx != wy) return wy - wx;   /* worse first */
    double u = kpi_flag_ratio(x), v = kpi_flag_ratio(y);
    if (u != v) return (wx ? u < v : u > v) ? 1 : -1;   /* worse: highest ratio first; better: lowest */
    if (x->n != y->n) return x->n < y->n ? 1 : -1;
    return strcmp(x->unit, y->unit);
}

#define FLAG_SHOWN 5   /* flagged units named on the first screen, each way */

static void flagged(px_buf *b, const rows *rs, const run_info *ri, int *worse, int *better)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        n += x->utype && strcmp(x->period, ri->period) == 0 && (!strcmp(x->flag, "worse") || !strcmp(x->flag, "better"));
    }
    const row **v = calloc(n ? n : 1, sizeof *v);
    if (!v) return;
    n = 0;
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (x->utype && strcmp(x->period, ri->period) == 0 && kpi_named_unit(x) &&
            (!strcmp(x->flag, "worse") || !strcmp(x->flag, "better")) && x->measure != PX_KPI_VOLUME)
            v[n++] = x;
    }
    qsort(v, n, sizeof *v, cmp_flag_rank);
    int nw = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        int w = strcmp(v[i]->flag, "worse") == 0;
        nw += w, nb += !w;
        if (v[i]->utype == 1) *(w ? worse : better) += 1;
    }
    px_buf_printf(b, "<section id='flagged' data-worse='%d' data-better='%d'><h2>Units flagged worse, then better, "
                     "than expected for their case mix</h2><p class='sub'>Ranked by how far their ratio "
                     "(observed / expected, or CMS's hierarchical standardized ratio for facilities) lies from 1; "
                     "flagged when its 95%% interval excludes 1. All of them are in the <a href='#league'>league "
                     "tables</a>.</p><div class='flagcols'>",
                  nw, nb);
    for (int pass = 0; pass < 2; pass++) {
        const char *want = pass ? "better" : "worse";
        int total = pass ? nb : nw, shown = 0;
        px_buf_printf(b, "<div><h3>%s than expected (%d)</h3><ol class='flags %s'>", pass ? "Better" : "Worse", total,
                      want);
        for (size_t i = 0; i < n && shown < FLAG_SHOWN; i++) {
            const row *x = v[i];
            if (strcmp(x->flag, want) != 0) continue;
            shown++;
            char r1[64], r2[64];
            kpi_fmt_val(r1, sizeof r1, x->measure, x->rate);
            kpi_fmt_val(r2, sizeof r2, x->measure, x->erate);
            int hier = strcmp(x->adjustment, "hierarchical") == 0 && isfinite(x->sr);
            px_buf_printf(b, "<li class='%s' data-measure='%s' data-unit-type='%s' data-unit='", x->flag,
                          px_kpi_measure_name(x->measure), kpi_utype_names[x->utype]);
            kpi_html_esc(b, x->unit);
            px_buf_adds(b, "'");
            kpi_data_attr(b, "oe", x->oe);
            kpi_data_attr(b, "ratio", kpi_flag_ratio(x));
            px_buf_printf(b, "><b>%s ", x->utype == 1 ? "Facility" : "Department");
            kpi_html_esc(b, x->unit);
            px_buf_printf(b, "</b>, %s: %s vs %s expected for its case mix (%s %.2f, %.2f &ndash; %.2f; %.0f cases)</li>",
                          kpi_mlabel[x->measure], r1, r2, hier ? "SR" : "O/E", kpi_flag_ratio(x), hier ? x->srlo : x->oelo,
                          hier ? x->srhi : x->oehi, x->n);
        }
        if (total > shown) px_buf_printf(b, "<li class='more'>and %d more in the league tables</li>", total - shown);
        if (!total) px_buf_printf(b, "<li class='none'>No unit is %s than expected beyond chance.</li>", want);
        px_buf_adds(b, "</ol></div>");
    }
    px_buf_adds(b, "</div></section><div id='first-screen-end'></div>");
    free(v);
}

static int trends(px_buf *b, const rows *rs, const run_info *ri)
{
    const char *all[4096], *per[4096];
    size_t na = kpi_periods_list(rs, all, 4096), n = 0;
    /* periods the data covers completely (a period that ends after the last
     * discharge holds only a few stays), and the report's own */
    for (size_t i = 0; i < na; i++) {
        const row *v = kpi_find_row(rs, PX_KPI_VOLUME, 0, NULL, all[i]);
        if (strcmp(all[i], ri->period) == 0 || !v || strcmp(v->end, ri->last) <= 0) per[n++] = all[i];
    }
    if (n < 2) return 0;
    kpi_point *pt = calloc(n, sizeof *pt);
    double *ex = calloc(n, sizeof *ex);
    if (!pt || !ex) {
        free(pt), free(ex);
        return PX_ENOMEM;
    }
    px_buf_printf(b, "<h2 id='trends'>Trends by %s</h2><p class='sub'>Whole system. The band is the 95%% interval "
                     "of the crude value; the dashed line is what the case mix predicts (expected).</p>",
                  ri->kind);
    for (int m = 0; m < PX_KPI__COUNT; m++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const row *x = kpi_find_row(rs, m, 0, NULL, per[i]);
            double y = x ? (m == PX_KPI_VOLUME ? x->n : x->rate) : NAN;
            pt[k] = (kpi_point){per[i], (double)i, y, x ? x->rlo : NAN, x ? x->rhi : NAN, ""};
            ex[k] = x && isfinite(x->erate) ? x->erate : NAN;
            k++;
        }
        int has_ex = 0;
        for (size_t i = 0; i < k; i++) has_ex |= isfinite(ex[i]);
        px_buf_printf(b, "<h3>%s</h3>", kpi_mlabel[m]);
        char aria[128];
        snprintf(aria, sizeof aria, "trend of %s by %s", kpi_mlabel[m], ri->kind);
        kpi_svg_trend(b, aria, pt, k, has_ex ? ex : NULL, kpi_is_rate(m), kpi_mlabel[m]);
    }
    free(pt);
    free(ex);
    return 0;
}

static void method_section(px_buf *b, PGconn *c, const run_info *ri, const px_kpi_report_params *p)
{
    cJSON *mt = ri->method;
    double conf = cJSON_GetNumberValue(cJSON_GetObjectItem(mt, "conf"));
    double minc = cJSON_GetNumberValue(cJSON_GetObjectItem(mt, "min_cases"));
    double byar = cJSON_GetNumberValue(cJSON_GetObjectItem(mt, "byar_min_events"));
    int od = cJSON_IsTrue(cJSON_GetObjectItem(mt, "overdispersion"));
    px_buf_adds(b, "<h2 id='methods'>Methods and data vintage</h2><div class='method'>");
    px_buf_printf(
        b,
        "<p><b>What is measured.</b> Each stay counts in the period of its discharge date, at its facility, its "
        "department and in the whole system. Readmission: an unplanned or planned return within 30 days of "
        "discharge, among stays discharged alive with 30 days of follow-up. Mortality: death within 30 days of "
        "admission. Length of stay: days from admission to discharge among stays of patients alive at 30 days. "
        "Cost: the recorded total cost of every stay.</p>"
        "<p><b>Risk adjustment.</b> Each stay's risk (or expected length of stay) comes from the registered risk "
        "model named below; a unit's <i>expected</i> count is the sum of its stays' predicted risks (indirect "
        "standardization). %s <i>O/E</i> above 1 means more events than the case mix predicts. For rates the O/E "
        "interval is the exact Poisson (Garwood) interval of the observed count divided by the expected count, "
        "with Byar's approximation from %.0f events on (it then agrees with the exact limits to 0.01%%). For "
        "length of stay it is a robust (sandwich) interval on the log scale. The <i>risk-standardized</i> rate is "
        "O/E times the system's crude rate. Crude rates carry Wilson score intervals; means carry Student t "
        "intervals. All intervals are %.0f%%.</p>"
        "<p><b>Hierarchical standardized ratio (facilities).</b> Where the risk model's version stores a "
        "hierarchical model (fitted when the model was trained: a random-intercept model with facility intercepts "
        "~ N(mu, tau<sup>2</sup>), by the Laplace approximation, as CMS Hospital Compare and lme4::glmer do), each "
        "facility's intercept is estimated from its own stays with the stored coefficients fixed (empirical "
        "Bayes: small facilities are pulled towards mu), and its <i>standardized ratio</i> is predicted (at the "
        "facility's intercept) / expected (at mu) over its stays; times the system's crude rate it is the CMS "
        "risk-standardized rate. Its interval comes from the normal posterior of the facility's intercept. The "
        "column <i>adjustment</i> of each row says which method it uses: <i>hierarchical</i> (facilities with a "
        "stored model), <i>indirect</i> (O/E with the pooled model: the system headline, departments, and "
        "facilities of a model without one). The system headline always uses indirect standardization: on the "
        "rows the model was fitted on, the system's expected equals its observed up to calibration, so the "
        "headline cannot be inverted by the choice of reference. <b>Every interval treats the models' "
        "coefficients as known</b>: their estimation uncertainty is not propagated (the bootstrap intervals "
        "stored with the hierarchical model, hierarchical.json, include it for the training data).</p>"
        "<p><b>Flags.</b> A facility with a hierarchical ratio is <i>worse</i> (or <i>better</i>) than expected "
        "when that ratio's interval lies entirely above (below) 1; other units when their O/E interval does; else "
        "<i>no different</i>. With many units, about 1 in 20 is flagged by "
        "chance alone at 95%%. Cells with fewer than %.0f cases are suppressed and shown as such, following the "
        "CMS Hospital Compare convention.</p>"
        "<p><b>Smoothed rates.</b> In the manner of the AHRQ Quality Indicators, each unit's risk-standardized "
        "rate is shrunk towards the system rate by its reliability weight: signal variance / (signal + noise "
        "variance), the signal (between-unit) variance estimated from the units by the DerSimonian-Laird method "
        "of moments. Small units move most.</p>"
        "<p><b>Funnel plots.</b> Control limits at 95%% and 99.8%% for each precision, from the exact Poisson "
        "distribution with Spiegelhalter's (2005) interpolation (normal limits for length of stay). "
        "Over-dispersion adjustment: %s.</p>",
        strncmp(cJSON_GetStringValue(cJSON_GetObjectItem(mt, "reference")) ? cJSON_GetStringValue(cJSON_GetObjectItem(mt, "reference")) : "", "pooled", 6) == 0
            ? "The predictions are used exactly as the model gives them."
            : "This run used the explicit <i>average facility</i> reference: before summing, each model's "
              "predictions were shifted by one constant (on the log-odds scale for rates, the log scale for days), "
              "the DerSimonian-Laird mean of the facilities' own intercepts given the model (listed with the "
              "models below). It is unstable when most facilities have few stays; the default is the pooled "
              "model's predictions as they are.",
        byar, conf * 100, minc,
        od ? "on (limits widened by the square root of the Winsorized mean squared z-score when it exceeds 1)"
           : "off");
    px_buf_adds(b, "<p><b>Risk models.</b></p><ul>");
    for (int k = 0; k < 3; k++) {
        cJSON *mj = cJSON_GetObjectItem(ri->models, kpi_risk_model[k]);
        if (!mj) continue;
        if (cJSON_IsTrue(cJSON_GetObjectItem(mj, "crude"))) {
            /* no usable risk model (missing or failed its quality gates): say so, and why */
            const char *why = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "adjustment"));
            px_buf_printf(b, "<li data-model='%s' data-version='0' data-crude='1'>%s: <b>not risk-adjusted</b> ",
                          kpi_risk_model[k], kpi_risk_model[k]);
            px_buf_adds(b, "(crude rates only; no expected count, O/E or flag): ");
            kpi_html_esc(b, why ? why : "");
            px_buf_adds(b, "</li>");
            continue;
        }
        const char *algo = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "algo"));
        const char *tab = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "feature_table"));
        const char *fp = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "fingerprint"));
        const char *at = cJSON_GetStringValue(cJSON_GetObjectItem(mj, "created_at"));
        cJSON *auc = cJSON_GetObjectItem(mj, "auc");
        px_buf_printf(b, "<li data-model='%s' data-version='%d'>%s: version %d", kpi_risk_model[k],
                      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(mj, "version")), kpi_risk_model[k],
                      (int)cJSON_GetNumberValue(cJSON_GetObjectItem(mj, "version")));
        if (algo) px_buf_printf(b, " (%s)", algo);
        if (tab) {
            px_buf_adds(b, ", scored on ");
            kpi_html_esc(b, tab);
        }
        if (at) {
            px_buf_adds(b, ", registered ");
            kpi_html_esc(b, at);
        }
        if (cJSON_IsNumber(auc)) px_buf_printf(b, ", holdout AUC %.3f", auc->valuedouble);
        cJSON *sh = cJSON_GetObjectItem(mj, "reference_shift");
        if (cJSON_IsNumber(sh) && sh->valuedouble != 0)
            px_buf_printf(b, ", reference shift %+.4f (%s scale)", sh->valuedouble, k < 2 ? "log-odds" : "log");
        cJSON *hj = cJSON_GetObjectItem(mj, "hierarchical");
        const char *hnote = cJSON_GetStringValue(cJSON_GetObjectItem(hj, "note"));
        if (hnote) {
            px_buf_adds(b, "; ");
            kpi_html_esc(b, hnote);
        }
        if (fp) {
            px_buf_adds(b, ", training data fingerprint ");
            char s[17];
            snprintf(s, sizeof s, "%.16s", fp);
            kpi_html_esc(b, s);
        }
        px_buf_adds(b, "</li>");
    }
    px_buf_adds(b, "</ul><p><b>Data.</b> ");
    char enc[32];
    kpi_thousands(enc, sizeof enc, (double)ri->encounters);
    px_buf_printf(b, "%s stays discharged from ", enc);
    kpi_html_esc(b, ri->first);
    px_buf_adds(b, " to ");
    kpi_html_esc(b, ri->last);
    px_buf_adds(b, ", from these loads of the warehouse:</p><ul>");
    px_etl_batch *bt = NULL;
    size_t nbt = 0;
    if (px_etl_batches_by_id(c, ri->batches, &bt, &nbt, NULL) == 0)
        for (size_t i = 0; i < nbt; i++) {
            char rows_s[32];
            kpi_thousands(rows_s, sizeof rows_s, (double)bt[i].rows_loaded);
            px_buf_printf(b, "<li data-batch='%lld'>batch %lld: ", bt[i].batch_id, bt[i].batch_id);
            kpi_html_esc(b, bt[i].format);
            px_buf_adds(b, " data loaded ");
            kpi_html_esc(b, bt[i].finished);
            px_buf_printf(b, ", %s rows</li>", rows_s);
        }
    free(bt);
    px_buf_printf(b, "</ul><p>KPI run %lld computed ", ri->run_id);
    kpi_html_esc(b, ri->computed_at);
    px_buf_adds(b, " by ");
    kpi_html_esc(b, ri->computed_by);
    px_buf_adds(b, ". This page was generated from it without network access; it contains only aggregate "
                   "counts, never a patient's identifier.</p>");
    if (p->dp_epsilon > 0)
        px_buf_printf(b,
                      "<p><b>Private release.</b> Every count on this page (cases, observed, expected) was released "
                      "through the Laplace mechanism with epsilon = %g per count (noise scale 1/epsilon, "
                      "sensitivity 1), seeded with %llu (splitmix64 / xoshiro256**, inverse-CDF draws) so the "
                      "release can be reproduced; counts are rounded and floored at 0. One stay enters at most %d "
                      "counts, so the page as a whole is %g-differentially private per stay (sequential "
                      "composition); a patient with several stays is protected in proportion. Length of stay "
                      "and cost, sums without a small sensitivity, are not released. Rates, intervals and flags "
                      "are recomputed from the noisy counts; smoothed rates and funnel plots are omitted.</p>",
                      p->dp_epsilon, (unsigned long long)p->dp_seed, DP_COUNTS_PER_STAY,
                      p->dp_epsilon * DP_COUNTS_PER_STAY);
    px_buf_adds(b, "</div>");
}

int kpi_report_html(PGconn *c, px_buf *b, rows *rs, const run_info *ri, const px_kpi_report_params *p,
                     const goals *g, px_kpi_report_info *info)
{
    const char *per[4096];
    size_t np = kpi_periods_list(rs, per, 4096);
    const char *prev = NULL, *start = "", *end = "";
    for (size_t i = 0; i < np; i++)
        if (strcmp(per[i], ri->period) == 0 && i > 0) prev = per[i - 1];
    const row *sv = kpi_find_row(rs, PX_KPI_VOLUME, 0, NULL, ri->period);
    if (sv) start = sv->start, end = sv->end;
    time_t now = time(NULL);
    struct tm tm;
    char gen[64];
    strftime(gen, sizeof gen, "%Y-%m-%d %H:%M UTC", gmtime_r(&now, &tm));
    px_buf_adds(b, "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                   "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                   "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
                   "<title>Prognos KPI report ");
    kpi_html_esc(b, ri->period);
    px_buf_printf(b, "</title><style>%s</style></head><body data-run='%lld' data-period='", css, ri->run_id);
    kpi_html_esc(b, ri->period);
    px_buf_printf(b, "' data-period-kind='%s'><h1>Outcome KPIs, period ", ri->kind);
    kpi_html_esc(b, ri->period);
    px_buf_adds(b, "</h1><p class='sub'>");
    kpi_html_esc(b, start);
    px_buf_adds(b, " to ");
    kpi_html_esc(b, end);
    px_buf_printf(b, " &middot; KPI run %lld &middot; generated %s &middot; risk-adjusted with the registered models "
                     "(see <a href='#methods'>methods</a>)</p>",
                  ri->run_id, gen);
    if (p->dp_epsilon > 0)
        px_buf_printf(b, "<p class='dp'><b>Differentially private release</b> (epsilon %g per count, %g per stay "
                         "overall): counts carry random noise; see the methods.</p>",
                      p->dp_epsilon, p->dp_epsilon * DP_COUNTS_PER_STAY);
    cautions(b, c, ri);
    headline(b, rs, ri, p, g, prev);
    flagged(b, rs, ri, &info->flagged_worse, &info->flagged_better);
    px_buf_adds(b, "<h2 id='league'>League tables</h2><p class='sub'>Units with enough cases, ordered by O/E, "
                   "highest first; dots are O/E, bars their 95% intervals, the dashed line 1 (as expected for the "
                   "case mix). Every unit, suppressed ones included, is in the CSV and JSON of the report.</p>");
    int rc = 0;
    static const int risk[3] = {PX_KPI_READMISSION, PX_KPI_MORTALITY, PX_KPI_LOS};
    int units_total = 0, sup_total = 0;
    for (int k = 0; k < 3 && rc == 0; k++) {
        int units = 0, sup = 0;
        rc = kpi_league(b, rs, ri, risk[k], 1, &units, &sup, p->dp_epsilon > 0);
        if (units > units_total) units_total = units;
        sup_total += sup;
    }
    info->units = units_total;
    info->suppressed = sup_total;
    px_buf_adds(b, "<h2 id='departments'>By department</h2>");
    for (int k = 0; k < 3 && rc == 0; k++) {
        int units = 0, sup = 0;
        rc = kpi_league(b, rs, ri, risk[k], 2, &units, &sup, p->dp_epsilon > 0);
    }
    if (rc == 0) rc = trends(b, rs, ri);
    method_section(b, c, ri, p);
    px_buf_adds(b, "</body></html>\n");
    return rc ? rc : b->data ? 0 : PX_ENOMEM;
}

