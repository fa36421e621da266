/* fuzz_json.c: libFuzzer target for the strict JSON check (serve/jsoncheck.c).
 * Any input: no crash, no read outside it; and whatever the check accepts, cJSON
 * (which is more lenient) must parse too, to the same end, or the check and the
 * parser disagree on what the body is. */
#include "serve/serve.h"
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so that ASan sees any read past the end */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    size_t off = 0;
    const char *why = NULL;
    int rc = px_json_validate(text, size, 8, &off, &why);
    if (rc != 0 && (off > size || !why)) {
        fprintf(stderr, "refused without a place or a reason: rc %d off %zu size %zu\n", rc, off, size);
        abort();
    }
    if (rc == 0) {
        /* cJSON wants a NUL after the text */
        char *z = malloc(size + 1);
        if (!z) abort();
        memcpy(z, data, size);
        z[size] = '\0';
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(z, size + 1, &end, 1);
        if (!j) {
            fprintf(stderr, "the strict check accepts what cJSON refuses (near byte %td)\n", end ? end - z : -1);
            abort();
        }
        cJSON_Delete(j);
        free(z);
    }
    free(text);
    return 0;
}
