/* test_serve_arena.c: the request arena (serve/arena.c): allocations from the inline
 * buffer, then from malloc'd chunks once it is full (zeroed or not, as asked), every
 * block aligned and writable whole (the ASan build checks the bounds), and release
 * wipes the inline buffer, frees the chunks and resets the arena for the next request. */
#include "serve/internal.h"
#include "tests/unit/check.h"
#include <stdint.h>
#include <string.h>

int main(void)
{
    char inline_buf[256];
    srv_arena a;
    srv_arena_init(&a, inline_buf, sizeof inline_buf);
    /* from the inline buffer */
    char *p = srv_arena_alloc(&a, 40, 1);
    CHECK(p != NULL && p >= inline_buf && p < inline_buf + sizeof inline_buf);
    CHECK(((uintptr_t)p & 7) == 0);
    for (int i = 0; i < 40; i++) CHECK(p[i] == 0);
    memset(p, 'x', 40);
    /* beyond it: chunks, not zeroed and zeroed, small and large */
    size_t sizes[] = {300, 5000, 17, 100000, 1};
    char *blocks[10];
    int k = 0;
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++, k++) {
            int zero = round == 1;
            blocks[k] = srv_arena_alloc(&a, sizes[i], zero);
            CHECK(blocks[k] != NULL);
            CHECK(((uintptr_t)blocks[k] & 7) == 0);
            if (zero)
                for (size_t j = 0; j < sizes[i]; j++) CHECK(blocks[k][j] == 0);
            memset(blocks[k], 'a' + k, sizes[i]); /* the whole block is ours */
        }
    CHECK(a.chunks != NULL);
    /* no block overlaps another: each still holds its own byte */
    k = 0;
    for (int round = 0; round < 2; round++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++, k++)
            CHECK(blocks[k][0] == 'a' + k && blocks[k][sizes[i] - 1] == 'a' + k);
    for (int i = 0; i < 40; i++) CHECK(p[i] == 'x');
    srv_arena_release(&a);
    CHECK(a.chunks == NULL);
    /* wiped on release (a request may leave plaintext ids in it) */
    for (size_t i = 0; i < sizeof inline_buf; i++) CHECK(inline_buf[i] == 0);
    /* reusable after release */
    char *q = srv_arena_alloc(&a, 64, 0);
    CHECK(q != NULL);
    memset(q, 'y', 64);
    srv_arena_release(&a);
    return check_report("serve arena");
}
