/* jsoncheck.c: a linear scan of a request body before cJSON parses it.
 * Depth: cJSON recurses once per level up to its compiled-in CJSON_NESTING_LIMIT
 * (1000), which a 1 MiB body of '[' reaches easily, and which cannot be lowered at
 * run time; a request never needs more than a few levels. Strings: cJSON accepts
 * raw control characters, and turns \u0000 into a NUL that cuts the C string it
 * hands out ("ed\u0000x" would read as the level "ed"); RFC 8259 forbids the
 * first, and no input of ours needs the second. Only brackets outside strings
 * count; everything else is cJSON's to validate. */
#include "serve/serve.h"

/* Byte classes: 1 for the bytes that matter inside a string (a quote, a
 * backslash, a control character), 2 for those that matter outside (a quote, a
 * bracket); 0 otherwise. One table lookup per byte skips the rest. */
#define IN_STR 1
#define OUT_STR 2
static const unsigned char cls[256] = {
    [0x00 ... 0x1f] = IN_STR, ['"'] = IN_STR | OUT_STR, ['\\'] = IN_STR,
    ['['] = OUT_STR, [']'] = OUT_STR, ['{'] = OUT_STR, ['}'] = OUT_STR,
};

int px_json_precheck(const char *text, size_t len, int max_depth, size_t *offset)
{
    const unsigned char *t = (const unsigned char *)text;
    int depth = 0;
    size_t i = 0;
    for (;;) {
        /* outside strings */
        while (i < len && !(cls[t[i]] & OUT_STR)) i++;
        if (i >= len) return 0;
        unsigned char ch = t[i++];
        if (ch == '[' || ch == '{') {
            if (++depth > max_depth) {
                if (offset) *offset = i - 1;
                return PX_EINVAL;
            }
            continue;
        }
        if (ch != '"') {
            if (depth > 0) depth--; /* unbalanced input is cJSON's to refuse */
            continue;
        }
        /* inside a string, up to its closing quote */
        for (;;) {
            while (i < len && !(cls[t[i]] & IN_STR)) i++;
            if (i >= len) return 0; /* unterminated: cJSON's to refuse */
            ch = t[i];
            if (ch == '"') {
                i++;
                break;
            }
            int nul_escape = ch == '\\' && i + 5 < len && t[i + 1] == 'u' && t[i + 2] == '0' && t[i + 3] == '0' &&
                             t[i + 4] == '0' && t[i + 5] == '0';
            if (ch < 0x20 || nul_escape) {
                if (offset) *offset = i;
                return PX_ECORRUPT;
            }
            i += 2; /* a backslash: skip the escaped character, whatever it is */
        }
    }
}
