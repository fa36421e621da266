/* arena.c: the per-request arena behind cJSON's allocation hooks (see internal.h).
 * Invariant: memory handed out from an arena is never given to free(); the hooks
 * tell arena memory from malloc'd memory by address, for the calling thread's
 * current arena only, which is the only one cJSON can be freeing into. */
#include "serve/internal.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 16
#define CHUNK_MIN (64u << 10)

static __thread srv_arena *current;

void srv_arena_init(srv_arena *a, char *buf, size_t size)
{
    a->inline_start = a->start = a->cur = buf;
    a->inline_size = size;
    a->end = buf + size;
    a->chunks = NULL;
}

void srv_arena_release(srv_arena *a)
{
    /* wiped, not only freed: a request's parse (cJSON's strings) may hold
     * plaintext encounter ids, and freed memory stays readable. The inline buffer
     * up to where it was filled (all of it once chunks were needed), every chunk whole. */
    if (a->inline_start) {
        int in_inline = a->cur >= a->inline_start && a->cur <= a->inline_start + a->inline_size;
        explicit_bzero(a->inline_start, in_inline ? (size_t)(a->cur - a->inline_start) : a->inline_size);
    }
    srv_arena_chunk *c = a->chunks;
    while (c) {
        srv_arena_chunk *next = c->next;
        explicit_bzero(c, c->size);
        free(c);
        c = next;
    }
    a->chunks = NULL;
    a->cur = a->start = a->end = NULL;
}

void srv_arena_use(srv_arena *a)
{
    current = a;
}

static int owns(const srv_arena *a, const void *p)
{
    const char *q = p;
    if (q >= a->inline_start && q < a->inline_start + a->inline_size) return 1;
    for (const srv_arena_chunk *c = a->chunks; c; c = c->next)
        if (q >= (const char *)c && q < (const char *)c + c->size) return 1;
    return 0;
}

void *srv_arena_alloc(srv_arena *a, size_t n, int zero)
{
    size_t need = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    uintptr_t at = ((uintptr_t)a->cur + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1);
    if (a->cur && at + need <= (uintptr_t)a->end) {
        a->cur = (char *)(at + need);
        if (zero) memset((void *)at, 0, n);
        return (void *)at;
    }
    size_t size = need + sizeof(srv_arena_chunk) + ALIGN;
    if (size < CHUNK_MIN) size = CHUNK_MIN;
    srv_arena_chunk *c = malloc(size);
    if (!c) return NULL;
    c->size = size;
    c->next = a->chunks;
    a->chunks = c;
    a->start = (char *)(c + 1);
    a->end = (char *)c + size;
    at = ((uintptr_t)a->start + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1);
    a->cur = (char *)(at + need);
    if (zero) memset((void *)at, 0, n);
    return (void *)at;
}

static void *arena_malloc(size_t n)
{
    srv_arena *a = current;
    return a ? srv_arena_alloc(a, n, 0) : malloc(n);
}

static void arena_free(void *p)
{
    if (!p) return;
    if (current && owns(current, p)) return; /* goes with the arena */
    free(p);
}

void srv_cjson_hooks_install(void)
{
    cJSON_Hooks h = {arena_malloc, arena_free};
    cJSON_InitHooks(&h);
}

void srv_cjson_hooks_remove(void)
{
    cJSON_InitHooks(NULL);
}
