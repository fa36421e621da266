/* etl_codemap.c: the crosswalk of `etl load --format fhir --code-map FILE`: a
 * CSV with the columns system, code, target_system (icd10 | icd9) and
 * target_code, mapping codes of other systems (SNOMED CT, as Synthea writes)
 * to ICD. Every line is checked when the file is read: a bad one stops the
 * load, naming it. */
#include "engine/etl_int.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct etl_codemap {
    px_keymap *map; /* digest(system|code) -> index in to */
    char (*to)[24]; /* "icd10|I509" */
    long long n, cap;
};

typedef struct cm_val { long long idx; } cm_val;

static void cm_key(const char *sys, const char *code, unsigned char k[16])
{
    char key[1100];
    snprintf(key, sizeof key, "%.500s|%.500s", sys, code);
    etl_digest("codemap", key, strlen(key), k);
}

void etl_codemap_free(etl_codemap *m)
{
    if (!m) return;
    px_keymap_free(m->map);
    free(m->to);
    free(m);
}

const char *etl_codemap_get(const etl_codemap *m, const char *system, const char *code)
{
    unsigned char k[16];
    cm_key(system, code, k);
    const cm_val *v = px_keymap_get(m->map, k);
    return v ? m->to[v->idx] : NULL;
}

etl_codemap *etl_codemap_read(const char *path, px_err *e)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        px_err_set(e, PX_EIO, "cannot open the code map '%s': %s", path, strerror(errno));
        return NULL;
    }
    px_csv *csv = px_csv_new(fd);
    etl_codemap *m = calloc(1, sizeof *m);
    if (!csv || !m || !(m->map = px_keymap_new(sizeof(cm_val)))) {
        px_csv_free(csv);
        close(fd);
        etl_codemap_free(m);
        px_err_set(e, PX_ENOMEM, "out of memory");
        return NULL;
    }
    px_csv_status st;
    int rc = 0, got = 0, col[4] = {-1, -1, -1, -1};
    static const char *const names[4] = {"system", "code", "target_system", "target_code"};
    if (px_csv_next(csv, &st) != 1 || st != PX_CSV_OK) rc = px_err_set(e, PX_EINVAL, "the code map '%s' has no header", path);
    for (int k = 0; rc == 0 && k < px_csv_nfields(csv); k++)
        for (int i = 0; i < 4; i++)
            if (strcmp(px_csv_field(csv, k), names[i]) == 0) col[i] = k;
    for (int i = 0; rc == 0 && i < 4; i++)
        if (col[i] < 0) {
            rc = px_err_set(e, PX_EINVAL, "the code map '%s' lacks the column '%s'", path, names[i]);
            px_err_hint(e, "columns: system (the source code system's URI), code, target_system (icd10 or icd9), "
                           "target_code");
        }
    while (rc == 0 && (got = px_csv_next(csv, &st)) > 0) {
        long long ln = px_csv_line(csv);
        int nf = px_csv_nfields(csv);
        if (st != PX_CSV_OK || nf <= col[0] || nf <= col[1] || nf <= col[2] || nf <= col[3]) {
            rc = px_err_set(e, PX_EINVAL, "the code map '%s' line %lld is malformed", path, ln);
            break;
        }
        const char *sys = px_csv_field(csv, col[0]), *code = px_csv_field(csv, col[1]);
        const char *ts = px_csv_field(csv, col[2]), *tc = px_csv_field(csv, col[3]);
        char norm[16];
        if (strcmp(ts, "icd10") && strcmp(ts, "icd9")) {
            rc = px_err_set(e, PX_EINVAL, "the code map '%s' line %lld: target_system must be icd10 or icd9", path, ln);
            break;
        }
        if (!*sys || !*code || px_icd_normalize(tc, strlen(tc), norm) < 3 ||
            !(strcmp(ts, "icd10") == 0 ? px_icd10_dx_valid(norm, strlen(norm)) || px_icd10_pcs_valid(norm, strlen(norm))
                                       : px_icd9_dx_valid(norm, strlen(norm)) || px_icd9_px_valid(norm, strlen(norm)))) {
            rc = px_err_set(e, PX_EINVAL, "the code map '%s' line %lld: '%.40s' is not a valid %s code", path, ln, tc, ts);
            break;
        }
        unsigned char k[16];
        int existed = 0;
        cm_key(sys, code, k);
        cm_val *v = px_keymap_put(m->map, k, &existed);
        if (!v) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            break;
        }
        if (existed) {
            rc = px_err_set(e, PX_EINVAL, "the code map '%s' maps %.200s|%.200s twice (line %lld)", path, sys, code, ln);
            break;
        }
        if (m->n == m->cap) {
            long long nc = m->cap ? m->cap * 2 : 256;
            char(*nt)[24] = realloc(m->to, (size_t)nc * sizeof *nt);
            if (!nt) {
                rc = px_err_set(e, PX_ENOMEM, "out of memory");
                break;
            }
            m->to = nt;
            m->cap = nc;
        }
        snprintf(m->to[m->n], sizeof m->to[m->n], "%s|%s", ts, norm);
        v->idx = m->n++;
    }
    if (rc == 0 && got < 0) rc = px_err_set(e, PX_EIO, "cannot read the code map '%s'", path);
    px_csv_free(csv);
    close(fd);
    if (rc != 0) {
        etl_codemap_free(m);
        return NULL;
    }
    return m;
}
