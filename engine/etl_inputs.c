/* etl_inputs.c: finding a batch's inputs (the SynPUF and canonical files of a
 * directory, the canonical tables of a source database) and reading a source
 * table as a CSV stream through a pipe. Calls nothing else of the ETL. */
#include "engine/etl_int.h"
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- inputs ------------------------------------------------------------------ */

static int add_input(etl_input **v, int *n, const char *dir, const char *name, int table, int year)
{
    etl_input *nv = realloc(*v, sizeof **v * (size_t)(*n + 1));
    if (!nv) return -1;
    *v = nv;
    etl_input *in = &nv[(*n)++];
    memset(in, 0, sizeof *in);
    snprintf(in->path, sizeof in->path, "%s/%s", dir, name);
    snprintf(in->name, sizeof in->name, "%s", name);
    in->table = table;
    in->year = year;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* SynPUF: the beneficiary summary files (any years, oldest first), then the
 * inpatient claims, by their CMS file names. */
static int find_synpuf(const char *dir, etl_input **v, int *n, px_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return px_err_set(e, PX_EIO, "cannot open source directory '%s': %s", dir, strerror(errno));
    char *names[256];
    int k = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        if (len < 5 || strcmp(nm + len - 4, ".csv") != 0) continue;
        if (!strstr(nm, "Beneficiary_Summary_File") && !strstr(nm, "Inpatient_Claims")) continue;
        if (k == 256 || !(names[k] = strdup(nm))) {
            closedir(d);
            for (int i = 0; i < k; i++) free(names[i]);
            return px_err_set(e, PX_EINVAL, "too many SynPUF files in '%s' (at most 256 per load)", dir);
        }
        k++;
    }
    closedir(d);
    qsort(names, (size_t)k, sizeof names[0], cmp_names);
    int rc = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < k; i++) {
            int bene = strstr(names[i], "Beneficiary_Summary_File") != NULL;
            if (bene != (pass == 0)) continue;
            int year = 0;
            const char *y = strstr(names[i], "_20");
            if (bene && y) year = atoi(y + 1);
            if (bene && (year < 1990 || year > 2100)) {
                rc = px_err_set(e, PX_EINVAL, "cannot tell the year of SynPUF file '%s'", names[i]);
                goto out;
            }
            if (add_input(v, n, dir, names[i], bene ? ETL_SYN_BENE : ETL_SYN_CLAIMS, year) != 0) {
                rc = px_err_set(e, PX_ENOMEM, "out of memory");
                goto out;
            }
        }
    if (*n == 0) {
        rc = px_err_set(e, PX_EINVAL, "no SynPUF files in '%s'", dir);
        px_err_hint(e, "expected DE1_0_<year>_Beneficiary_Summary_File_*.csv and "
                       "DE1_0_2008_to_2010_Inpatient_Claims_*.csv");
    }
out:
    for (int i = 0; i < k; i++) free(names[i]);
    return rc;
}

static int find_canonical(const char *dir, etl_input **v, int *n, px_err *e)
{
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return px_err_set(e, PX_EIO, "source '%s' is not a directory", dir);
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, px_canonical[t].file);
        if (access(path, R_OK) != 0) continue;
        if (add_input(v, n, dir, px_canonical[t].file, t, 0) != 0) return px_err_set(e, PX_ENOMEM, "out of memory");
    }
    if (*n == 0) {
        px_err_set(e, PX_EINVAL, "no canonical files in '%s'", dir);
        px_err_hint(e, "expected facilities.csv, providers.csv, patients.csv, encounters.csv, diagnoses.csv, "
                       "procedures.csv (see 'prognos etl layout')");
        return PX_EINVAL;
    }
    return 0;
}

/* FHIR Bulk Data: every *.ndjson file of the directory (Patient.000.ndjson,
 * Encounter.ndjson, ...), by name; the loader reads them all before it writes,
 * so their order does not matter. */
static int find_fhir(const char *dir, etl_input **v, int *n, px_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return px_err_set(e, PX_EIO, "cannot open source directory '%s': %s", dir, strerror(errno));
    char **names = NULL;
    int k = 0, cap = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        size_t len = strlen(nm);
        if (len < 8 || strcmp(nm + len - 7, ".ndjson") != 0 || nm[0] == '.') continue;
        if (k == cap) {
            int nc = cap ? cap * 2 : 16;
            char **nv = nc <= 100000 ? realloc(names, (size_t)nc * sizeof *nv) : NULL;
            if (!nv) {
                rc = px_err_set(e, PX_ENOMEM, "out of memory");
                break;
            }
            names = nv;
            cap = nc;
        }
        if (!(names[k] = strdup(nm))) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            break;
        }
        k++;
    }
    closedir(d);
    if (rc == 0 && k > 1) qsort(names, (size_t)k, sizeof names[0], cmp_names);
    for (int i = 0; i < k && rc == 0; i++)
        if (add_input(v, n, dir, names[i], 0, 0) != 0) rc = px_err_set(e, PX_ENOMEM, "out of memory");
    if (rc == 0 && *n == 0) {
        rc = px_err_set(e, PX_EINVAL, "no FHIR NDJSON files in '%s'", dir);
        px_err_hint(e, "expected a Bulk Data export: one resource per line in files named *.ndjson "
                       "(Patient.000.ndjson, Encounter.ndjson, ...)");
    }
    for (int i = 0; i < k; i++) free(names[i]);
    free(names);
    return rc;
}

/* ---- postgres source: a source table streamed as CSV through a pipe -------------- */

struct etl_pg_feed {
    pthread_t th;
    PGconn *src;
    int fd;
    char err[512];
    char path[4096];
};

/* Copies the source's COPY stream into the pipe. If the parser stops reading
 * (it failed), the rest of the stream is drained unwritten: libpq must see the
 * COPY to its end before the connection can be used or closed cleanly. */
static void *pg_feed_run(void *arg)
{
    etl_pg_feed *f = arg;
    char *row;
    int n, writing = 1;
    while ((n = PQgetCopyData(f->src, &row, 0)) > 0) {
        const char *p = row;
        while (writing && n > 0) {
            ssize_t w = write(f->fd, p, (size_t)n);
            if (w < 0) {
                if (errno == EINTR) continue;
                snprintf(f->err, sizeof f->err, "pipe write failed: %s", strerror(errno));
                writing = 0;
                break;
            }
            p += w;
            n -= (int)w;
        }
        PQfreemem(row);
    }
    if (n == -2 && !f->err[0]) snprintf(f->err, sizeof f->err, "%s", PQerrorMessage(f->src));
    close(f->fd);
    PGresult *r;
    while ((r = PQgetResult(f->src)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && !f->err[0])
            snprintf(f->err, sizeof f->err, "%s", PQresultErrorMessage(r));
        PQclear(r);
    }
    return NULL;
}

int etl_pg_feed_open(etl_ctx *x, PGconn *src, const etl_input *in, etl_pg_feed **out, int *fd)
{
    const px_table *t = &px_canonical[in->table];
    char sql[2048] = "COPY (SELECT ";
    for (int i = 0; i < t->ncols; i++) {
        strcat(sql, i ? ", " : "");
        strcat(sql, t->cols[i].name);
    }
    strcat(sql, " FROM ");
    strcat(sql, in->path);
    /* every column: the same rows must give the same bytes (and SHA-256) in any physical order */
    strcat(sql, " ORDER BY ");
    for (int i = 0; i < t->ncols; i++) {
        char n[16];
        snprintf(n, sizeof n, "%s%d", i ? ", " : "", i + 1);
        strcat(sql, n);
    }
    strcat(sql, ") TO STDOUT WITH (FORMAT csv, HEADER true)");
    PGresult *r = PQexec(src, sql);
    int ok = PQresultStatus(r) == PGRES_COPY_OUT;
    if (!ok) {
        px_err_set(x->e, PX_EDB, "cannot read source table '%s'", in->path);
        px_err_detail(x->e, "%s", PQresultErrorMessage(r));
    }
    PQclear(r);
    if (!ok) return PX_EDB;
    etl_pg_feed *f = calloc(1, sizeof *f);
    if (!f) return px_err_set(x->e, PX_ENOMEM, "out of memory");
    int pipefd[2];
    if (pipe(pipefd) != 0) {
        free(f);
        return px_err_set(x->e, PX_EIO, "pipe: %s", strerror(errno));
    }
    f->src = src;
    f->fd = pipefd[1];
    if (pthread_create(&f->th, NULL, pg_feed_run, f) != 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        free(f);
        return px_err_set(x->e, PX_EIO, "cannot start the source reader");
    }
    *fd = pipefd[0];
    *out = f;
    snprintf(f->path, sizeof f->path, "%s", in->path);
    return 0;
}

int etl_pg_feed_close(etl_ctx *x, etl_pg_feed *f, int rc)
{
    pthread_join(f->th, NULL);
    if (rc == 0 && f->err[0]) {
        px_err_set(x->e, PX_EDB, "reading source table '%s' failed", f->path);
        px_err_detail(x->e, "%s", f->err);
        rc = PX_EDB;
    }
    free(f);
    return rc;
}

/* The source as recorded in etl.batches: libpq parses the URI or conninfo and
 * it is rebuilt as keyword=value pairs without the password. */
void etl_redact_uri(const char *uri, char *out, size_t len)
{
    PQconninfoOption *opts = PQconninfoParse(uri, NULL);
    size_t o = 0;
    out[0] = '\0';
    if (!opts) {
        snprintf(out, len, "(unparseable connection string)");
        return;
    }
    for (PQconninfoOption *op = opts; op->keyword && o + 1 < len; op++) {
        if (!op->val || !*op->val || strcmp(op->keyword, "password") == 0) continue;
        int n = snprintf(out + o, len - o, "%s%s=%s", o ? " " : "", op->keyword, op->val);
        if (n < 0 || (size_t)n >= len - o) break;
        o += (size_t)n;
    }
    PQconninfoFree(opts);
}


int etl_discover(const px_etl_params *p, etl_input **inputs, int *n, PGconn **src, px_err *e)
{
    if (!p->source || !*p->source) return px_err_set(e, PX_EINVAL, "no --source given");
    if (p->format == PX_FMT_SYNPUF) return find_synpuf(p->source, inputs, n, e);
    if (p->format == PX_FMT_CANONICAL) return find_canonical(p->source, inputs, n, e);
    if (p->format == PX_FMT_FHIR) return find_fhir(p->source, inputs, n, e);
    *src = px_db_connect_url(p->source, e);
    if (!*src) return e->code;
    /* one snapshot for all tables, so rows written meanwhile cannot split a reference */
    if (px_db_exec(*src, e, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") != 0) return e->code;
    /* every canonical table that exists in the source, by name, in load order */
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        char q[256], found[8] = "";
        snprintf(q, sizeof q, "SELECT to_regclass('%s') IS NOT NULL", px_canonical[t].name);
        if (px_db_scalar(*src, e, found, sizeof found, q) != 0) return e->code;
        if (strcmp(found, "t") != 0) continue;
        etl_input *nv = realloc(*inputs, sizeof **inputs * (size_t)(*n + 1));
        if (!nv) return px_err_set(e, PX_ENOMEM, "out of memory");
        *inputs = nv;
        etl_input *in = &nv[(*n)++];
        memset(in, 0, sizeof *in);
        snprintf(in->path, sizeof in->path, "%s", px_canonical[t].name);
        snprintf(in->name, sizeof in->name, "%s", px_canonical[t].name);
        in->table = t;
    }
    if (*n == 0) {
        px_err_set(e, PX_EINVAL, "the source database has none of the canonical tables");
        px_err_hint(e, "expected tables facilities, providers, patients, encounters, diagnoses, procedures "
                       "in the search_path, with the canonical columns");
        return PX_EINVAL;
    }
    return 0;
}

