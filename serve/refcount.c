/* refcount.c: reference-counted shared objects and the slots that swap them.
 * A reader acquires the current object under the slot's mutex and releases it
 * when done; a swap drops only the slot's reference, so the last holder frees. */
#include "serve/internal.h"
#include <stdlib.h>
#include <string.h>

void srv_slot_init(srv_slot *s)
{
    pthread_mutex_init(&s->mu, NULL);
    s->cur = NULL;
}

void *srv_acquire(srv_slot *s)
{
    pthread_mutex_lock(&s->mu);
    srv_rc *o = s->cur;
    if (o) atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    return o;
}

void srv_release(void *obj)
{
    srv_rc *o = obj;
    if (o && atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1) o->destroy(o);
}

void srv_slot_swap(srv_slot *s, void *obj)
{
    pthread_mutex_lock(&s->mu);
    void *old = s->cur;
    s->cur = obj;
    pthread_mutex_unlock(&s->mu);
    srv_release(old);
}

void srv_slot_release(srv_slot *s)
{
    srv_slot_swap(s, NULL);
    pthread_mutex_destroy(&s->mu);
}

static void text_destroy(void *p)
{
    free(p);
}

srv_text *srv_text_new(const char *s, size_t len)
{
    srv_text *t = malloc(sizeof *t + len + 1);
    if (!t) return NULL;
    atomic_init(&t->rc.refs, 1);
    t->rc.destroy = text_destroy;
    t->len = len;
    memcpy(t->s, s, len);
    t->s[len] = '\0';
    return t;
}
