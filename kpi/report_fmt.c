/* report_fmt.c: what the report's HTML, league tables and exports share: measure
 * and unit-type labels, numbers formatted for reading (HTML entities for a
 * missing value), data-* attributes at full precision, flag wording, and lookups
 * in the rows of a run. No file of the report calls back into its callers. */
#include "kpi/report_int.h"
#include <stdlib.h>

/* A result field as a number, NAN when NULL. */
double kpi_res_dbl(PGresult *r, int i, int j)
{
    return PQgetisnull(r, i, j) ? NAN : strtod(PQgetvalue(r, i, j), NULL);
}

const char *const kpi_utype_names[3] = {"system", "facility", "department"};

int kpi_is_rate(int m)
{
    return m == PX_KPI_READMISSION || m == PX_KPI_MORTALITY;
}

const char *const kpi_mlabel[PX_KPI__COUNT] = {"Volume (discharges)", "30-day readmission rate",
                                                  "30-day mortality rate", "Average length of stay",
                                                  "Cost per encounter"};

void kpi_thousands(char *out, size_t len, double v)
{
    char t[64];
    snprintf(t, sizeof t, "%.0f", fabs(v));
    size_t n = strlen(t), o = 0;
    if (v < 0 && o + 1 < len) out[o++] = '-';
    for (size_t i = 0; i < n && o + 2 < len; i++) {
        out[o++] = t[i];
        if ((n - i - 1) % 3 == 0 && i + 1 < n) out[o++] = ',';
    }
    out[o] = 0;
}

/* A value on its measure's scale, for reading: "14.2%", "4.71 days", "$18,020", "1,234". */
void kpi_fmt_val(char *out, size_t len, int m, double v)
{
    char t[40];
    if (!isfinite(v)) {
        snprintf(out, len, "&ndash;");
        return;
    }
    switch (m) {
    case PX_KPI_READMISSION:
    case PX_KPI_MORTALITY: snprintf(out, len, "%.1f%%", v * 100); break;
    case PX_KPI_LOS: snprintf(out, len, "%.2f days", v); break;
    case PX_KPI_COST: kpi_thousands(t, sizeof t, v); snprintf(out, len, "$%s", t); break;
    default: kpi_thousands(out, len, v); break;
    }
}

void kpi_fmt_num(char *out, size_t len, const char *f, double v)
{
    if (isfinite(v))
        snprintf(out, len, f, v);
    else
        snprintf(out, len, "&ndash;");
}

/* data-NAME='%.12g' (empty when NULL): the stored value at full precision */
void kpi_data_attr(px_buf *b, const char *name, double v)
{
    if (isfinite(v))
        px_buf_printf(b, " data-%s='%.12g'", name, v);
    else
        px_buf_printf(b, " data-%s=''", name);
}

const char *kpi_flag_words(const char *f)
{
    if (strcmp(f, "worse") == 0) return "worse than expected";
    if (strcmp(f, "better") == 0) return "better than expected";
    if (strcmp(f, "no_different") == 0) return "no different from expected";
    if (strcmp(f, "suppressed") == 0) return "suppressed (too few cases)";
    if (strcmp(f, "withheld") == 0) return "withheld";
    return f;
}

int kpi_lower_is_better(int m)
{
    return m != PX_KPI_VOLUME;
}

const row *kpi_find_row(const rows *rs, int m, int utype, const char *unit, const char *period)
{
    for (size_t i = 0; i < rs->n; i++) {
        const row *x = &rs->v[i];
        if (x->measure == m && x->utype == utype && strcmp(x->period, period) == 0 && (!unit || strcmp(x->unit, unit) == 0))
            return x;
    }
    return NULL;
}

/* The periods of the run in order (distinct labels of the system volume rows). */
size_t kpi_periods_list(const rows *rs, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < rs->n && n < max; i++)
        if (rs->v[i].measure == PX_KPI_VOLUME && rs->v[i].utype == 0) out[n++] = rs->v[i].period;
    return n;
}

/* A unit the report names: not the department of stays that had none. */
int kpi_named_unit(const row *x)
{
    return !(x->utype == 2 && (strcmp(x->unit, "unknown") == 0 || !x->unit[0]));
}

/* The ratio a flag comes from: the hierarchical standardized ratio where there is one, else O/E. */
double kpi_flag_ratio(const row *x)
{
    return strcmp(x->adjustment, "hierarchical") == 0 && isfinite(x->sr) ? x->sr : x->oe;
}

/* Is this risk measure computed crude in this run (no usable model)? */
int kpi_measure_crude(const run_info *ri, int m)
{
    static const int risk[3] = {PX_KPI_READMISSION, PX_KPI_MORTALITY, PX_KPI_LOS};
    for (int k = 0; k < 3; k++)
        if (risk[k] == m) return cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(ri->models, kpi_risk_model[k]), "crude"));
    return 0;
}

