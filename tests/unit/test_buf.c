/* test_buf.c: px_buf's sticky error (the sqlite3_str idiom): the first failed
 * append is kept until px_buf_reset / px_buf_release, every append still returns
 * its own status, and a buffer that never failed reports 0. */
#include "engine/engine.h"
#include "check.h"
#include <stdint.h>
#include <stdlib.h>

int main(void)
{
    px_buf b = {0};
    CHECK_INT(px_buf_adds(&b, "abc"), 0);
    CHECK_INT(px_buf_printf(&b, "-%d", 42), 0);
    CHECK_INT(px_buf_failed(&b), 0);
    CHECK_STR(b.data, "abc-42");

    /* a request no allocator can meet fails, and the failure sticks */
    CHECK_INT(px_buf_reserve(&b, SIZE_MAX - 8), PX_ENOMEM);
    CHECK_INT(px_buf_failed(&b), PX_ENOMEM);
    CHECK_INT(b.len, 6);                     /* the buffer itself is unchanged */
    CHECK_INT(px_buf_adds(&b, "def"), 0);    /* later appends still run and report their own status */
    CHECK_INT(px_buf_failed(&b), PX_ENOMEM); /* ... but the text is known to be incomplete */
    CHECK_STR(b.data, "abc-42def");

    /* the first error is the one kept */
    CHECK_INT(px_buf_add(&b, "x", SIZE_MAX / 2), PX_ENOMEM);
    CHECK_INT(px_buf_failed(&b), PX_ENOMEM);

    /* reset: empty, memory kept, error cleared */
    size_t cap = b.cap;
    px_buf_reset(&b);
    CHECK_INT(b.len, 0);
    CHECK_INT(b.cap, cap);
    CHECK_STR(b.data, "");
    CHECK_INT(px_buf_failed(&b), 0);

    /* the escapers fail and stick the same way */
    CHECK_INT(px_buf_json_str(&b, "q\"", SIZE_MAX / 2), PX_ENOMEM);
    CHECK_INT(px_buf_failed(&b), PX_ENOMEM);
    px_buf_release(&b);
    CHECK_INT(px_buf_failed(&b), 0);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);

    /* a reset on an empty {0} buffer is harmless */
    px_buf z = {0};
    px_buf_reset(&z);
    CHECK_INT(px_buf_addc(&z, 'z'), 0);
    CHECK_STR(z.data, "z");
    px_buf_release(&z);
    return check_report("test_buf");
}
