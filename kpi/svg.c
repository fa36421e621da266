/* svg.c: the report's charts as inline SVG (no script, no external resource):
 * a forest plot of O/E with intervals (league table), a funnel plot with control
 * limits, and a trend line with an interval band. Every number drawn is also in
 * the page's tables; the charts only place them. Text is XML-escaped. */
#include "kpi/internal.h"
#include <math.h>
#include <string.h>

void kpi_html_esc(px_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': px_buf_adds(b, "&amp;"); break;
        case '<': px_buf_adds(b, "&lt;"); break;
        case '>': px_buf_adds(b, "&gt;"); break;
        case '"': px_buf_adds(b, "&quot;"); break;
        case '\'': px_buf_adds(b, "&#39;"); break;
        default: px_buf_addc(b, *s);
        }
    }
}

/* A "nice" tick step (1, 2 or 5 x 10^k) giving about n ticks over span. */
static double nice_step(double span, int n)
{
    if (!(span > 0)) return 1;
    double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void tick_label(char *out, size_t len, double v, int pct, double step)
{
    if (fabs(v) < step * 1e-6) v = 0;   /* no "-0" */
    double s = pct ? step * 100 : step;
    int dec = s >= 1 ? 0 : (int)ceil(-log10(s) - 1e-9);
    if (dec > 6) dec = 6;
    snprintf(out, len, pct ? "%.*f%%" : "%.*f", dec, pct ? v * 100 : v);
}

typedef struct frame {
    double x0, x1, y0, y1;      /* data range */
    double l, r, t, bt;         /* plot area in pixels: left, right, top, bottom */
} frame;

static double px_x(const frame *f, double x)
{
    return f->l + (x - f->x0) / (f->x1 - f->x0) * (f->r - f->l);
}

static double px_y(const frame *f, double y)
{
    return f->bt - (y - f->y0) / (f->y1 - f->y0) * (f->bt - f->t);
}

static void axis_y(px_buf *b, const frame *f, int pct, const char *label)
{
    double step = nice_step(f->y1 - f->y0, 5);
    for (double v = ceil(f->y0 / step) * step; v <= f->y1 + step * 1e-9; v += step) {
        char t[32];
        tick_label(t, sizeof t, v, pct, step);
        double y = px_y(f, v);
        px_buf_printf(b, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='grid'/>", f->l, f->r, y, y);
        px_buf_printf(b, "<text x='%.1f' y='%.1f' class='tick' text-anchor='end'>%s</text>", f->l - 4, y + 4, t);
    }
    px_buf_printf(b, "<text x='12' y='%.1f' class='axis' transform='rotate(-90 12 %.1f)' text-anchor='middle'>",
                  (f->t + f->bt) / 2, (f->t + f->bt) / 2);
    kpi_html_esc(b, label);
    px_buf_adds(b, "</text>");
}

static void axis_x(px_buf *b, const frame *f, int pct, const char *label)
{
    double step = nice_step(f->x1 - f->x0, 6);
    for (double v = ceil(f->x0 / step) * step; v <= f->x1 + step * 1e-9; v += step) {
        char t[32];
        tick_label(t, sizeof t, v, pct, step);
        double x = px_x(f, v);
        px_buf_printf(b, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='grid'/>", x, x, f->t, f->bt);
        px_buf_printf(b, "<text x='%.1f' y='%.1f' class='tick' text-anchor='middle'>%s</text>", x, f->bt + 14, t);
    }
    px_buf_printf(b, "<text x='%.1f' y='%.1f' class='axis' text-anchor='middle'>", (f->l + f->r) / 2, f->bt + 30);
    kpi_html_esc(b, label);
    px_buf_adds(b, "</text>");
}

static void svg_open(px_buf *b, double w, double h, const char *aria)
{
    px_buf_printf(b, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' role='img' aria-label='",
                  w, h, w, h);
    kpi_html_esc(b, aria);
    px_buf_adds(b, "'>");
}

int kpi_svg_forest(px_buf *b, const char *aria, const kpi_point *p, size_t n, double ref)
{
    const double rowh = 14, w = 560;
    double lo = ref, hi = ref;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(p[i].lo) && p[i].lo < lo) lo = p[i].lo;
        if (isfinite(p[i].hi) && p[i].hi > hi) hi = p[i].hi;
    }
    double pad = (hi - lo) * 0.05 + 1e-9;
    frame f = {lo - pad, hi + pad, 0, (double)(n ? n : 1), 90, w - 16, 10, 10 + rowh * (double)(n ? n : 1)};
    svg_open(b, w, f.bt + 40, aria);
    axis_x(b, &f, 0, "observed / expected (O/E) with interval; 1 = as expected for the case mix");
    double xr = px_x(&f, ref);
    px_buf_printf(b, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='ref'/>", xr, xr, f.t, f.bt);
    for (size_t i = 0; i < n; i++) {
        double y = f.t + rowh * ((double)i + 0.5);
        px_buf_printf(b, "<g class='%s'><text x='84' y='%.1f' class='tick' text-anchor='end'>", p[i].cls, y + 4);
        kpi_html_esc(b, p[i].label);
        px_buf_adds(b, "</text>");
        if (isfinite(p[i].lo) && isfinite(p[i].hi))
            px_buf_printf(b, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='ci'/>", px_x(&f, p[i].lo),
                          px_x(&f, p[i].hi), y, y);
        if (isfinite(p[i].y)) px_buf_printf(b, "<circle cx='%.1f' cy='%.1f' r='3.5'/>", px_x(&f, p[i].y), y);
        px_buf_adds(b, "</g>");
    }
    return px_buf_adds(b, "</svg>");
}

int kpi_svg_funnel(px_buf *b, const char *aria, const kpi_point *p, size_t n, kpi_limit_fn lim, const void *arg,
                   const char *xlabel)
{
    const double w = 640, h = 400;
    double xmax = 0, ylo = 1, yhi = 1;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(p[i].x) && p[i].x > xmax) xmax = p[i].x;
        if (isfinite(p[i].y)) {
            if (p[i].y < ylo) ylo = p[i].y;
            if (p[i].y > yhi) yhi = p[i].y;
        }
    }
    if (!(xmax > 0)) xmax = 1;
    xmax *= 1.05;
    /* the limits at the smallest plotted precision set the y range, within reason */
    double xs = xmax / 40, l998 = lim(xs, 0.998, 0, arg), u998 = lim(xs, 0.998, 1, arg);
    if (isfinite(l998) && l998 < ylo) ylo = fmax(l998, 0);
    if (isfinite(u998) && u998 > yhi) yhi = fmin(u998, 3 * yhi);
    double pad = (yhi - ylo) * 0.05 + 1e-9;
    frame f = {0, xmax, fmax(0, ylo - pad), yhi + pad, 56, w - 16, 12, h - 44};
    svg_open(b, w, h, aria);
    axis_y(b, &f, 0, "O/E");
    axis_x(b, &f, 0, xlabel);
    double yr = px_y(&f, 1);
    px_buf_printf(b, "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' class='ref'/>", f.l, f.r, yr, yr);
    static const double confs[2] = {0.95, 0.998};
    static const char *const cls[2] = {"lim95", "lim998"};
    for (int c = 0; c < 2; c++)
        for (int up = 0; up < 2; up++) {
            px_buf_printf(b, "<polyline class='%s' points='", cls[c]);
            for (int k = 1; k <= 120; k++) {
                double x = xs + (xmax - xs) * (k - 1) / 119.0, y = lim(x, confs[c], up, arg);
                if (!isfinite(y)) continue;
                y = fmin(fmax(y, f.y0), f.y1);
                px_buf_printf(b, "%.1f,%.1f ", px_x(&f, x), px_y(&f, y));
            }
            px_buf_adds(b, "'/>");
        }
    /* units no different from expected: one path of dots (a funnel of thousands of
     * facilities stays small); flagged units: a circle each, named in its title */
    px_buf_adds(b, "<path class='dots' d='");
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(p[i].x) || !isfinite(p[i].y) || strcmp(p[i].cls, "worse") == 0 || strcmp(p[i].cls, "better") == 0)
            continue;
        px_buf_printf(b, "M%.0f %.0fh0", px_x(&f, p[i].x), px_y(&f, p[i].y));
    }
    px_buf_adds(b, "'/>");
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(p[i].x) || !isfinite(p[i].y)) continue;
        if (strcmp(p[i].cls, "worse") != 0 && strcmp(p[i].cls, "better") != 0) continue;
        px_buf_printf(b, "<circle class='%s' cx='%.1f' cy='%.1f' r='4'><title>", p[i].cls, px_x(&f, p[i].x),
                      px_y(&f, p[i].y));
        kpi_html_esc(b, p[i].label);
        px_buf_printf(b, ": O/E %.2f</title></circle>", p[i].y);
    }
    px_buf_printf(b, "<text x='%.1f' y='24' class='tick' text-anchor='end'>dashed: 95%% limits; solid: 99.8%% limits</text>",
                  f.r - 4);
    return px_buf_adds(b, "</svg>");
}

int kpi_svg_trend(px_buf *b, const char *aria, const kpi_point *p, size_t n, const double *expected, int pct,
                  const char *ylabel)
{
    const double w = 640, h = 260;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double v[4] = {p[i].y, p[i].lo, p[i].hi, expected ? expected[i] : NAN};
        for (int k = 0; k < 4; k++)
            if (isfinite(v[k])) lo = fmin(lo, v[k]), hi = fmax(hi, v[k]);
    }
    if (!isfinite(lo)) lo = 0, hi = 1;
    double pad = (hi - lo) * 0.08 + fabs(hi) * 0.01 + 1e-9;
    frame f = {-0.5, (double)(n ? n : 1) - 0.5, lo - pad, hi + pad, 64, w - 16, 12, h - 40};
    if (pct && f.y0 < 0) f.y0 = 0;
    svg_open(b, w, h, aria);
    axis_y(b, &f, pct, ylabel);
    /* period labels: at most about 12 of them */
    size_t every = n > 12 ? (n + 11) / 12 : 1;
    for (size_t i = 0; i < n; i += every) {
        px_buf_printf(b, "<text x='%.1f' y='%.1f' class='tick' text-anchor='middle'>", px_x(&f, (double)i), f.bt + 16);
        kpi_html_esc(b, p[i].label);
        px_buf_adds(b, "</text>");
    }
    /* the interval band: upper limits left to right, lower limits back */
    px_buf_adds(b, "<polygon class='band' points='");
    for (size_t i = 0; i < n; i++)
        if (isfinite(p[i].hi)) px_buf_printf(b, "%.1f,%.1f ", px_x(&f, (double)i), px_y(&f, p[i].hi));
    for (size_t i = n; i-- > 0;)
        if (isfinite(p[i].lo)) px_buf_printf(b, "%.1f,%.1f ", px_x(&f, (double)i), px_y(&f, p[i].lo));
    px_buf_adds(b, "'/>");
    if (expected) {
        px_buf_adds(b, "<polyline class='expected' points='");
        for (size_t i = 0; i < n; i++)
            if (isfinite(expected[i])) px_buf_printf(b, "%.1f,%.1f ", px_x(&f, (double)i), px_y(&f, expected[i]));
        px_buf_adds(b, "'/>");
    }
    px_buf_adds(b, "<polyline class='line' points='");
    for (size_t i = 0; i < n; i++)
        if (isfinite(p[i].y)) px_buf_printf(b, "%.1f,%.1f ", px_x(&f, (double)i), px_y(&f, p[i].y));
    px_buf_adds(b, "'/>");
    for (size_t i = 0; i < n; i++)
        if (isfinite(p[i].y)) px_buf_printf(b, "<circle class='pt' cx='%.1f' cy='%.1f' r='2.5'/>", px_x(&f, (double)i), px_y(&f, p[i].y));
    return px_buf_adds(b, "</svg>");
}

int kpi_svg_spark(px_buf *b, const char *aria, const double *y, size_t n, size_t cur)
{
    const double w = 170, h = 34;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(y[i])) lo = fmin(lo, y[i]), hi = fmax(hi, y[i]);
    if (!isfinite(lo)) return 0;
    if (hi - lo < 1e-12) lo -= 0.5 * fabs(lo) + 1e-9, hi += 0.5 * fabs(hi) + 1e-9;
    frame f = {0, (double)(n > 1 ? n - 1 : 1), lo, hi, 4, w - 4, 4, h - 4};
    svg_open(b, w, h, aria);
    px_buf_adds(b, "<polyline class='spark' points='");
    for (size_t i = 0; i < n; i++)
        if (isfinite(y[i])) px_buf_printf(b, "%.1f,%.1f ", px_x(&f, (double)i), px_y(&f, y[i]));
    px_buf_adds(b, "'/>");
    if (cur < n && isfinite(y[cur]))
        px_buf_printf(b, "<circle class='pt' cx='%.1f' cy='%.1f' r='2.5'/>", px_x(&f, (double)cur), px_y(&f, y[cur]));
    return px_buf_adds(b, "</svg>");
}
