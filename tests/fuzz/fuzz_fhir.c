/* fuzz_fhir.c: libFuzzer target for the FHIR Bulk Data NDJSON reader of the
 * loader (engine/etl_fhir.c, its database-free part) and for the features
 * computed from FHIR resources (features/fhir.c). Input: NDJSON text, one
 * resource per line. Checks, for any input:
 *  - accounting: every non-blank line is rejected (spooled to etl.rejects),
 *    skipped, or becomes exactly one canonical row: read = rejected + skipped
 *    + rows written;
 *  - the canonical tables written are CSV the canonical loader reads: a header
 *    and one record per row, each with the table's column count, row k on line
 *    k + 2 (the loader maps rejects back to NDJSON lines by it);
 *  - px_feat_from_fhir over a prefetch made of the lines (the first Patient and
 *    Encounter, every resource as the lists) returns NULL with a message, or an
 *    object of finite numbers, strings and nulls, for each set. */
#define _GNU_SOURCE
#include "engine/etl_int.h"
#include "engine/fhir.h"
#include "features/features.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static void check_tables(etl_fhir *F, long long *rows_total)
{
    *rows_total = 0;
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        long long rows = 0;
        FILE *f = etl_fhir_table(F, t, &rows);
        int fd = dup(fileno(f));
        if (fd < 0) FAIL("dup");
        lseek(fd, 0, SEEK_SET);
        px_csv *csv = px_csv_new(fd);
        px_csv_status st;
        long long n = -1;
        int got;
        while ((got = px_csv_next(csv, &st)) > 0) {
            if (n >= 0 && px_csv_line(csv) != n + 2)
                FAIL("%s: record %lld on line %lld", px_canonical[t].name, n, px_csv_line(csv));
            if (st != PX_CSV_OK && st != PX_CSV_BAD_UTF8) FAIL("%s: record %lld status %d", px_canonical[t].name, n, st);
            if (px_csv_nfields(csv) != px_canonical[t].ncols)
                FAIL("%s: record %lld has %d fields", px_canonical[t].name, n, px_csv_nfields(csv));
            n++;
        }
        if (got < 0) FAIL("read error");
        if (n != rows) FAIL("%s: %lld records, %lld rows counted", px_canonical[t].name, n, rows);
        px_csv_free(csv);
        close(fd);
        *rows_total += rows;
    }
}

static void check_features(const uint8_t *data, size_t size)
{
    cJSON *pf = cJSON_CreateObject(), *lists[3];
    static const char *const keys[3] = {"encounters", "conditions", "procedures"};
    for (int i = 0; i < 3; i++) cJSON_AddItemToObject(pf, keys[i], lists[i] = cJSON_CreateArray());
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        cJSON *r = cJSON_ParseWithLength(p, len);
        p += len + 1;
        const char *t = px_fhir_str(r, "resourceType");
        if (!t) {
            cJSON_Delete(r);
            continue;
        }
        if (strcmp(t, "Patient") == 0 && !cJSON_GetObjectItem(pf, "patient"))
            cJSON_AddItemToObject(pf, "patient", cJSON_Duplicate(r, 1));
        if (strcmp(t, "Encounter") == 0 && !cJSON_GetObjectItem(pf, "encounter"))
            cJSON_AddItemToObject(pf, "encounter", cJSON_Duplicate(r, 1));
        int k = strcmp(t, "Encounter") == 0 ? 0 : strcmp(t, "Condition") == 0 ? 1 : strcmp(t, "Procedure") == 0 ? 2 : -1;
        if (k >= 0) cJSON_AddItemToArray(lists[k], r);
        else cJSON_Delete(r);
    }
    static const char *const sets[3] = {"readmission", "mortality", "los"};
    for (int s = 0; s < 3; s++) {
        px_err e = {0};
        cJSON *inst = px_feat_from_fhir(pf, sets[s], s == 0 ? "2024-01-31" : NULL, &e);
        if (!inst) {
            if (!e.msg[0]) FAIL("px_feat_from_fhir failed without a message");
            continue;
        }
        const cJSON *v;
        cJSON_ArrayForEach(v, inst)
            if (!(cJSON_IsNull(v) || cJSON_IsString(v) || (cJSON_IsNumber(v) && isfinite(v->valuedouble))))
                FAIL("feature %s is not a number, string or null", v->string);
        cJSON_Delete(inst);
    }
    cJSON_Delete(pf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[] = "/tmp/px-fuzz-fhir-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) FAIL("write");
    close(fd);
    px_err e = {0};
    px_etl_params p = px_etl_default_params();
    p.format = PX_FMT_FHIR;
    etl_ctx x;
    memset(&x, 0, sizeof x);
    x.p = &p;
    x.e = &e;
    x.batch = 1;
    x.rej = tmpfile();
    x.warn = tmpfile();
    etl_input in;
    memset(&in, 0, sizeof in);
    snprintf(in.path, sizeof in.path, "%s", path);
    snprintf(in.name, sizeof in.name, "fuzz.ndjson");
    if (!x.rej || !x.warn || etl_sha256_file(path, in.sha, &in.bytes, &e) != 0) FAIL("setup: %s", e.msg);
    x.in = &in;
    etl_fhir *F = etl_fhir_new(&x, &in, 1);
    if (!F) FAIL("etl_fhir_new: %s", e.msg);
    int rc = etl_fhir_read(F);
    if (rc != 0 && rc != PX_ENOMEM) FAIL("etl_fhir_read: %s", e.msg);
    if (rc == 0) {
        long long rows, read, skipped;
        check_tables(F, &rows);
        etl_fhir_counts(F, 0, &read, &skipped);
        if (read != x.rej_spooled + skipped + rows)
            FAIL("accounting: read %lld, rejected %lld, skipped %lld, rows %lld", read, x.rej_spooled, skipped, rows);
    }
    etl_fhir_free(F);
    fclose(x.rej);
    fclose(x.warn);
    unlink(path);
    check_features(data, size);
    return 0;
}
