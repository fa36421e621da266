/* cmd_features_fhir.c: `prognos features fhir`, the feature instance of a stay
 * computed from FHIR R4 resources (px_feat_from_fhir), for one prefetch or a
 * file of them (usage in cmd_features.c). Reads files only: no warehouse. */
#include "engine/cli/cli.h"
#include "features/features.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PREFETCH (64u << 20)

static int one(const char *text, const char *set, const char *as_of, int ndjson, long long line)
{
    cJSON *pf = cJSON_Parse(text);
    px_err e = {0};
    cJSON *inst = NULL;
    if (!pf) px_err_set(&e, PX_EINVAL, "the prefetch is not valid JSON");
    else inst = px_feat_from_fhir(pf, set, as_of, &e);
    cJSON_Delete(pf);
    if (!inst) {
        if (!ndjson) return px_cli_fail(&e);
        cJSON *err = cJSON_CreateObject();
        char where[64];
        snprintf(where, sizeof where, "line %lld", line);
        cJSON_AddStringToObject(err, "error", e.msg);
        cJSON_AddStringToObject(err, "where", where);
        char *s = cJSON_PrintUnformatted(err);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(err);
        return PX_EXIT_FAIL;
    }
    char *s = cJSON_PrintUnformatted(inst);
    cJSON_Delete(inst);
    if (!s) {
        px_err_set(&e, PX_ENOMEM, "out of memory");
        return px_cli_fail(&e);
    }
    printf("%s\n", s);
    free(s);
    return PX_EXIT_OK;
}

int cmd_features_fhir(int argc, char **argv)
{
    const char *set = NULL, *file = NULL, *as_of = NULL;
    int ndjson = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) set = argv[++i];
        else if (strcmp(argv[i], "--prefetch") == 0 && i + 1 < argc) file = argv[++i];
        else if (strcmp(argv[i], "--as-of") == 0 && i + 1 < argc) as_of = argv[++i];
        else if (strcmp(argv[i], "--ndjson") == 0) ndjson = 1;
        else return px_cli_usage_error("features", "unknown or incomplete option '%s'", argv[i]);
    }
    if (!set || !px_feat_set_find(set))
        return px_cli_usage_error("features", "fhir needs --set readmission, mortality or los");
    if (!file) return px_cli_usage_error("features", "fhir needs --prefetch FILE");
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    px_err e = {0};
    if (!f) {
        px_err_set(&e, PX_EIO, "cannot open '%s': %s", file, strerror(errno));
        return px_cli_fail(&e);
    }
    int rc = PX_EXIT_OK;
    char *line = NULL;
    size_t cap = 0;
    if (ndjson) {
        ssize_t n;
        long long ln = 0;
        while ((n = getline(&line, &cap, f)) > 0) {
            ln++;
            if (n == 1 && line[0] == '\n') continue;
            if (one(line, set, as_of, 1, ln) != PX_EXIT_OK) rc = PX_EXIT_FAIL;
        }
    } else {
        px_buf b = {0};
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && rc == PX_EXIT_OK) {
            if (b.len + n > MAX_PREFETCH) {
                px_err_set(&e, PX_EINVAL, "'%s' is larger than %u MiB", file, MAX_PREFETCH >> 20);
                rc = px_cli_fail(&e);
            } else if (px_buf_add(&b, chunk, n) != 0) {
                px_err_set(&e, PX_ENOMEM, "out of memory");
                rc = px_cli_fail(&e);
            }
        }
        if (rc == PX_EXIT_OK && px_buf_addc(&b, '\0') != 0) {
            px_err_set(&e, PX_ENOMEM, "out of memory");
            rc = px_cli_fail(&e);
        }
        if (rc == PX_EXIT_OK) rc = one(b.data, set, as_of, 0, 1);
        px_buf_release(&b);
    }
    if (ferror(f)) {
        px_err_set(&e, PX_EIO, "cannot read '%s'", file);
        rc = px_cli_fail(&e);
    }
    free(line);
    if (f != stdin) fclose(f);
    fflush(stdout);
    return rc;
}
