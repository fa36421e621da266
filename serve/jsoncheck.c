/* jsoncheck.c: a linear scan of a request body before cJSON parses it.
 * Depth: cJSON recurses once per level up to its compiled-in CJSON_NESTING_LIMIT
 * (1000), which a 1 MiB body of '[' reaches easily, and which cannot be lowered at
 * run time; a request never needs more than a few levels. Strings: cJSON accepts
 * raw control characters, and turns \u0000 into a NUL that cuts the C string it
 * hands out ("ed\u0000x" would read as the level "ed"); RFC 8259 forbids the
 * first, and no input of ours needs the second. Only brackets outside strings
 * count; everything else is cJSON's to validate. */
#include "serve/serve.h"

int px_json_precheck(const char *text, size_t len, int max_depth, size_t *offset)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        /* the common bytes first: inside a string, anything but a quote, a
         * backslash or a control character; outside, anything but a bracket or a quote */
        if (in_str ? (ch >= 0x20 && ch != '"' && ch != '\\') : (ch != '"' && ch != '[' && ch != '{' && ch != ']' && ch != '}'))
            continue;
        if (in_str) {
            int nul_escape = ch == '\\' && i + 5 < len && text[i + 1] == 'u' && text[i + 2] == '0' &&
                             text[i + 3] == '0' && text[i + 4] == '0' && text[i + 5] == '0';
            if (ch < 0x20 || nul_escape) {
                if (offset) *offset = i;
                return PX_ECORRUPT;
            }
            if (ch == '\\') {
                i++; /* skip the escaped character, whatever it is */
            } else if (ch == '"')
                in_str = 0;
            continue;
        }
        if (ch == '"') in_str = 1;
        else if (ch == '[' || ch == '{') {
            if (++depth > max_depth) {
                if (offset) *offset = i;
                return PX_EINVAL;
            }
        } else if (ch == ']' || ch == '}') {
            if (depth > 0) depth--; /* unbalanced input is cJSON's to refuse */
        }
    }
    return 0;
}
