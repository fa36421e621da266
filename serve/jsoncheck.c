/* jsoncheck.c: a linear scan that bounds JSON nesting before cJSON parses a body.
 * cJSON recurses once per level up to its compiled-in CJSON_NESTING_LIMIT (1000),
 * which a 1 MiB body of '[' reaches easily, and which cannot be lowered at run
 * time; a request never needs more than a few levels. Only brackets outside
 * strings count; the scan does not validate anything else (cJSON does). */
#include "serve/serve.h"

int px_json_depth_check(const char *text, size_t len, int max_depth, size_t *offset)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_str) {
            if (ch == '\\') i++;          /* skip the escaped character, whatever it is */
            else if (ch == '"') in_str = 0;
            continue;
        }
        if (ch == '"') in_str = 1;
        else if (ch == '[' || ch == '{') {
            if (++depth > max_depth) {
                if (offset) *offset = i;
                return PX_EINVAL;
            }
        } else if (ch == ']' || ch == '}') {
            if (depth > 0) depth--;       /* unbalanced input is cJSON's to refuse */
        }
    }
    return 0;
}
