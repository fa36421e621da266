/* report_goals.c: the report's targets (--target, --targets FILE as JSON or CSV)
 * and national benchmarks (--benchmarks DIR: CMS Hospital Compare and HRRP files),
 * read before any database work so that a bad file fails first, with the file,
 * line and field named. */
#include "kpi/report_int.h"
#include "engine/internal.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int parse_num(const char *s, double *v)
{
    char *end;
    while (*s == ' ') s++;
    if (!*s) return -1;
    double x = strtod(s, &end);
    while (*end == ' ') end++;
    if (*end || !isfinite(x)) return -1;
    *v = x;
    return 0;
}

/* One target, from its fields as text; where names the place ("targets.csv line 3"). */
static int target_set(goals *g, const char *path, const char *where, const char *measure, const char *value,
                      const char *direction, const char *source, px_err *e)
{
    px_kpi_measure m;
    double v;
    if (!measure || px_kpi_measure_parse(measure, &m) != 0)
        return px_err_set(e, PX_EINVAL, "%s, field measure: '%s' is not a measure (volume, readmission, mortality, los, cost)",
                          where, measure ? measure : "(missing)");
    if (!value || parse_num(value, &v) != 0 || v < 0)
        return px_err_set(e, PX_EINVAL, "%s, field value: '%s' is not a non-negative number", where,
                          value ? value : "(missing)");
    if ((m == PX_KPI_READMISSION || m == PX_KPI_MORTALITY) && v > 1) {
        px_err_set(e, PX_EINVAL, "%s, field value: %s for %s is not a proportion", where, value, measure);
        px_err_hint(e, "rates are proportions: 0.15 for 15%%");
        return PX_EINVAL;
    }
    int hb = !kpi_lower_is_better(m);
    if (direction && *direction) {
        if (strcmp(direction, "lower") == 0 || strcmp(direction, "lower_is_better") == 0)
            hb = 0;
        else if (strcmp(direction, "higher") == 0 || strcmp(direction, "higher_is_better") == 0)
            hb = 1;
        else
            return px_err_set(e, PX_EINVAL, "%s, field direction: '%s' is not lower or higher", where, direction);
    }
    if (isfinite(g->target[m].value))
        return px_err_set(e, PX_EINVAL, "%s: a second target for %s in %s", where, measure, path);
    g->target[m].value = v;
    g->target[m].higher_better = hb;
    snprintf(g->target[m].source, sizeof g->target[m].source, "%s", source && *source ? source : path);
    return 0;
}

static int targets_json(goals *g, const char *path, const char *text, px_err *e)
{
    cJSON *d = cJSON_Parse(text);
    if (!d) {
        const char *at = cJSON_GetErrorPtr();
        int line = 1;
        for (const char *q = text; at && q < at && *q; q++) line += *q == '\n';
        return px_err_set(e, PX_EINVAL, "%s line %d: not valid JSON", path, line);
    }
    cJSON *arr = cJSON_IsArray(d) ? d : cJSON_GetObjectItem(d, "targets");
    int rc = 0;
    if (!cJSON_IsArray(arr)) {
        rc = px_err_set(e, PX_EINVAL, "%s: expected an array of targets (or {\"targets\": [...]})", path);
        px_err_hint(e, "[{\"measure\": \"readmission\", \"value\": 0.15, \"direction\": \"lower\", \"source\": \"board 2024\"}]");
        goto out;
    }
    int i = 0;
    cJSON *t;
    cJSON_ArrayForEach(t, arr)
    {
        char where[600], val[64] = "";
        snprintf(where, sizeof where, "%s target %d", path, i++ + 1);
        if (!cJSON_IsObject(t)) {
            rc = px_err_set(e, PX_EINVAL, "%s: not an object", where);
            goto out;
        }
        cJSON *f;
        cJSON_ArrayForEach(f, t)
        {
            if (strcmp(f->string, "measure") && strcmp(f->string, "value") && strcmp(f->string, "direction") &&
                strcmp(f->string, "source")) {
                rc = px_err_set(e, PX_EINVAL, "%s: unknown field '%s' (measure, value, direction, source)", where,
                                f->string);
                goto out;
            }
        }
        cJSON *v = cJSON_GetObjectItem(t, "value");
        if (cJSON_IsNumber(v))
            snprintf(val, sizeof val, "%.17g", v->valuedouble);
        else if (v) {
            rc = px_err_set(e, PX_EINVAL, "%s, field value: not a number", where);
            goto out;
        }
        cJSON *dj = cJSON_GetObjectItem(t, "direction"), *sj = cJSON_GetObjectItem(t, "source");
        if ((dj && !cJSON_IsString(dj)) || (sj && !cJSON_IsString(sj))) {
            rc = px_err_set(e, PX_EINVAL, "%s: direction and source are strings", where);
            goto out;
        }
        if ((rc = target_set(g, path, where, cJSON_GetStringValue(cJSON_GetObjectItem(t, "measure")), v ? val : NULL,
                             cJSON_GetStringValue(dj), cJSON_GetStringValue(sj), e)) != 0)
            goto out;
    }
out:
    cJSON_Delete(d);
    return rc;
}

static int targets_csv(goals *g, const char *path, int fd, px_err *e)
{
    px_csv *c = px_csv_new(fd);
    if (!c) return px_err_set(e, PX_ENOMEM, "out of memory");
    int col[4] = {-1, -1, -1, -1}, rc = 0, got, nrows = 0;
    static const char *const names[4] = {"measure", "value", "direction", "source"};
    px_csv_status st;
    while ((got = px_csv_next(c, &st)) == 1) {
        long long line = px_csv_line(c);
        char where[600];
        snprintf(where, sizeof where, "%s line %lld", path, line);
        if (st != PX_CSV_OK) {
            rc = px_err_set(e, PX_EINVAL, "%s: %s", where, st == PX_CSV_BAD_UTF8 ? "not UTF-8" : "malformed CSV quoting");
            break;
        }
        int nf = px_csv_nfields(c);
        if (col[0] < 0 && col[1] < 0) {   /* the header */
            for (int i = 0; i < nf; i++) {
                int k = 0;
                while (k < 4 && strcmp(px_csv_field(c, i), names[k]) != 0) k++;
                if (k == 4) {
                    rc = px_err_set(e, PX_EINVAL, "%s: unknown column '%s' (measure, value, direction, source)", where,
                                    px_csv_field(c, i));
                    break;
                }
                col[k] = i;
            }
            if (rc == 0 && (col[0] < 0 || col[1] < 0)) {
                rc = px_err_set(e, PX_EINVAL, "%s: the header needs the columns measure and value", where);
                px_err_hint(e, "measure,value,direction,source");
            }
            if (rc) break;
            continue;
        }
        if (nf == 1 && !*px_csv_field(c, 0)) continue;   /* a blank line */
        const char *f[4];
        for (int k = 0; k < 4; k++) f[k] = col[k] >= 0 && col[k] < nf ? px_csv_field(c, col[k]) : NULL;
        if ((rc = target_set(g, path, where, f[0], f[1], f[2], f[3], e)) != 0) break;
        nrows++;
    }
    if (rc == 0 && got < 0) rc = px_err_set(e, PX_EIO, "cannot read '%s': %s", path, strerror(errno));
    if (rc == 0 && col[0] < 0) rc = px_err_set(e, PX_EINVAL, "%s: empty (expected a header measure,value,direction,source)", path);
    if (rc == 0 && nrows == 0) rc = px_err_set(e, PX_EINVAL, "%s: a header but no target", path);
    px_csv_free(c);
    return rc;
}

/* --targets FILE: JSON when the first non-blank byte is [ or {, else CSV. */
int kpi_targets_load(goals *g, const char *path, px_err *e)
{
    unsigned char *text = NULL;
    size_t len = 0;
    int rc = px_file_read(path, 1 << 20, &text, &len, e);
    if (rc) return rc;
    const char *s = (const char *)text;
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    if (*s == '[' || *s == '{') {
        rc = targets_json(g, path, (const char *)text, e);
    } else {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            rc = px_err_set(e, PX_EIO, "cannot open '%s': %s", path, strerror(errno));
        else {
            rc = targets_csv(g, path, fd, e);
            close(fd);
        }
    }
    free(text);
    if (rc && rc != PX_EIO && rc != PX_ENOMEM) rc = PX_EINVAL;
    return rc;
}

/* The patient-weighted national rate of a set of CMS columns: each hospital's
 * rate (percent) in column RATE weighted by its patients in column N, over the
 * conditions whose column names contain the text. */
typedef struct bench_acc {
    double sum, w;
    long long hospitals;
} bench_acc;

static int bench_file(const char *dir, const char *file, int (*row_fn)(px_csv *, int *, bench_acc *, int),
                      const char *const *cols, int ncols, bench_acc *acc, int *found, px_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return px_err_set(e, PX_EIO, "cannot open '%s': %s", path, strerror(errno));
    }
    *found = 1;
    px_csv *c = px_csv_new(fd);
    if (!c) {
        close(fd);
        return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    int idx[64], rc = 0, got, header = 1;
    for (int k = 0; k < ncols && k < 64; k++) idx[k] = -1;
    px_csv_status st;
    while ((got = px_csv_next(c, &st)) == 1) {
        if (st != PX_CSV_OK) {
            rc = px_err_set(e, PX_EINVAL, "%s line %lld: %s", path, px_csv_line(c),
                            st == PX_CSV_BAD_UTF8 ? "not UTF-8" : "malformed CSV quoting");
            break;
        }
        int nf = px_csv_nfields(c);
        if (header) {
            header = 0;
            for (int k = 0; k < ncols; k++)
                for (int i = 0; i < nf; i++)
                    if (strcmp(px_csv_field(c, i), cols[k]) == 0) idx[k] = i;
            for (int k = 0; k < ncols; k++)
                if (idx[k] < 0) {
                    rc = px_err_set(e, PX_EINVAL, "%s line 1: no column '%s'", path, cols[k]);
                    px_err_hint(e, "--benchmarks expects the CMS files as published (Hospital Compare "
                                   "outcome-of-care-measures.csv, HRRP FY_*_Hospital.csv)");
                    break;
                }
            if (rc) break;
            continue;
        }
        row_fn(c, idx, acc, nf);
    }
    if (rc == 0 && got < 0) rc = px_err_set(e, PX_EIO, "cannot read '%s': %s", path, strerror(errno));
    px_csv_free(c);
    close(fd);
    return rc;
}

static int num_field(px_csv *c, int i, int nf, double *v)
{
    return i >= 0 && i < nf && parse_num(px_csv_field(c, i), v) == 0 ? 0 : -1;
}

/* Hospital Compare: readmission (acc[0]) and mortality (acc[1]) over AMI, HF, pneumonia. */
static int hc_row(px_csv *c, int *idx, bench_acc *acc, int nf)
{
    for (int k = 0; k < 12; k += 2) {
        double r, n;
        if (num_field(c, idx[k], nf, &r) || num_field(c, idx[k + 1], nf, &n) || r < 0 || r > 100 || n <= 0) continue;
        bench_acc *a = &acc[k < 6 ? 0 : 1];
        a->sum += r / 100 * n, a->w += n, a->hospitals++;
    }
    return 0;
}

/* HRRP: the national rate a hospital's case mix predicts (expected readmission
 * rate, percent) weighted by its discharges. */
static int hrrp_row(px_csv *c, int *idx, bench_acc *acc, int nf)
{
    double r, n;
    if (num_field(c, idx[0], nf, &r) || num_field(c, idx[1], nf, &n) || r < 0 || r > 100 || n <= 0) return 0;
    acc[0].sum += r / 100 * n, acc[0].w += n, acc[0].hospitals++;
    return 0;
}

int kpi_benchmarks_load(goals *g, const char *dir, px_err *e)
{
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return px_err_set(e, PX_EINVAL, "--benchmarks '%s': not a folder", dir);
    static const char *const hc[12] = {
        "Hospital 30-Day Readmission Rates from Heart Attack",
        "Number of Patients - Hospital 30-Day Readmission Rates from Heart Attack",
        "Hospital 30-Day Readmission Rates from Heart Failure",
        "Number of Patients - Hospital 30-Day Readmission Rates from Heart Failure",
        "Hospital 30-Day Readmission Rates from Pneumonia",
        "Number of Patients - Hospital 30-Day Readmission Rates from Pneumonia",
        "Hospital 30-Day Death (Mortality) Rates from Heart Attack",
        "Number of Patients - Hospital 30-Day Death (Mortality) Rates from Heart Attack",
        "Hospital 30-Day Death (Mortality) Rates from Heart Failure",
        "Number of Patients - Hospital 30-Day Death (Mortality) Rates from Heart Failure",
        "Hospital 30-Day Death (Mortality) Rates from Pneumonia",
        "Number of Patients - Hospital 30-Day Death (Mortality) Rates from Pneumonia"};
    bench_acc a[2] = {{0}}, h[1] = {{0}};
    int f1 = 0, f2 = 0, rc;
    if ((rc = bench_file(dir, "outcome-of-care-measures.csv", hc_row, hc, 12, a, &f1, e)) != 0) return rc;
    /* HRRP: the newest FY_*_Hospital_Readmissions_Reduction_Program_Hospital.csv */
    char hrrp[512] = "";
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (strncmp(de->d_name, "FY_", 3) == 0 && strstr(de->d_name, "Readmissions_Reduction_Program") &&
                strcmp(de->d_name, hrrp) > 0 && strlen(de->d_name) < sizeof hrrp)
                snprintf(hrrp, sizeof hrrp, "%s", de->d_name);
        closedir(d);
    }
    static const char *const hr[2] = {"Expected Readmission Rate", "Number of Discharges"};
    if (hrrp[0] && (rc = bench_file(dir, hrrp, hrrp_row, hr, 2, h, &f2, e)) != 0) return rc;
    if (!f1 && !f2) {
        px_err_set(e, PX_EINVAL, "--benchmarks '%s': holds neither outcome-of-care-measures.csv nor an HRRP file", dir);
        px_err_hint(e, "download them from data.cms.gov (Hospital Compare / Care Compare, HRRP)");
        return PX_EINVAL;
    }
    if (f1 && !(a[0].w > 0) && !(a[1].w > 0))
        return px_err_set(e, PX_EINVAL, "%s/outcome-of-care-measures.csv: no hospital with a rate and patients", dir);
    if (a[0].w > 0) {
        g->bench[PX_KPI_READMISSION][0].value = a[0].sum / a[0].w;
        snprintf(g->bench[PX_KPI_READMISSION][0].source, sizeof g->bench[0][0].source,
                 "national, CMS Hospital Compare (heart attack, heart failure, pneumonia; %lld hospital rates, "
                 "patient-weighted)", a[0].hospitals);
    }
    if (a[1].w > 0) {
        g->bench[PX_KPI_MORTALITY][0].value = a[1].sum / a[1].w;
        snprintf(g->bench[PX_KPI_MORTALITY][0].source, sizeof g->bench[0][0].source,
                 "national, CMS Hospital Compare (heart attack, heart failure, pneumonia; %lld hospital rates, "
                 "patient-weighted)", a[1].hospitals);
    }
    if (h[0].w > 0) {
        g->bench[PX_KPI_READMISSION][1].value = h[0].sum / h[0].w;
        snprintf(g->bench[PX_KPI_READMISSION][1].source, sizeof g->bench[0][0].source,
                 "national, CMS HRRP %.7s (expected rate, six conditions, discharge-weighted)", hrrp);
    }
    return 0;
}

