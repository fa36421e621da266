/* gen_out.c: the generator's output files: one big buffer per file flushed
 * with fwrite, numbers and dates written without printf (no locale can change
 * the bytes), and the all-or-nothing rename of the finished set. */
#include "engine/gen_internal.h"
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

void gen_out_flush(gen_out *o)
{
    if (o->len && !o->err && fwrite(o->buf, 1, o->len, o->f) != o->len) o->err = errno ? errno : EIO;
    o->len = 0;
}

void gen_put_mem(gen_out *o, const char *s, size_t n)
{
    out_room(o, n);
    if (n > OUT_CAP) {
        if (!o->err && fwrite(s, 1, n, o->f) != n) o->err = errno ? errno : EIO;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

void gen_put_u(gen_out *o, uint64_t v, int width)  /* decimal, zero-padded to width */
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n < width && n < (int)sizeof tmp) tmp[n++] = '0';
    out_room(o, (size_t)n);
    while (n) o->buf[o->len++] = tmp[--n];
}

void gen_put_i(gen_out *o, long long v)
{
    if (v < 0) put_c(o, '-');
    gen_put_u(o, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, 1);
}

void gen_put_date(gen_out *o, int days)
{
    int y, m, d;
    px_civil_from_days(days, &y, &m, &d);
    gen_put_u(o, (uint64_t)y, 4);
    put_c(o, '-');
    gen_put_u(o, (uint64_t)m, 2);
    put_c(o, '-');
    gen_put_u(o, (uint64_t)d, 2);
}

/* Fixed-point decimal without printf, so no locale can change it; NaN -> null. */
void gen_put_fixed(gen_out *o, double x, int dec)
{
    static const double scale[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    if (!isfinite(x)) {
        put_s(o, "null");
        return;
    }
    long long v = llround(x * scale[dec]);
    if (v < 0) {
        put_c(o, '-');
        v = -v;
    }
    gen_put_u(o, (uint64_t)(v / (long long)scale[dec]), 1);
    if (dec) {
        put_c(o, '.');
        gen_put_u(o, (uint64_t)(v % (long long)scale[dec]), dec);
    }
}

void gen_put_jstr(gen_out *o, const char *s)  /* JSON string literal */
{
    put_c(o, '"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            put_c(o, '\\');
            put_c(o, (char)ch);
        } else if (ch < 0x20) {
            static const char hex[] = "0123456789abcdef";
            put_s(o, "\\u00");
            put_c(o, hex[ch >> 4]);
            put_c(o, hex[ch & 15]);
        } else {
            put_c(o, (char)ch);
        }
    }
    put_c(o, '"');
}

int gen_outs_open(gen *g, px_err *e)
{
    for (int t = 0; t <= PX_TAB__COUNT; t++) {
        gen_out *o = &g->out[t];
        const char *name = t < PX_TAB__COUNT ? px_canonical[t].file : "truth.json";
        if (snprintf(o->path, sizeof o->path, "%s/%s", g->par->out_dir, name) >= (int)sizeof o->path ||
            snprintf(o->tmp, sizeof o->tmp, "%s/%s.tmp", g->par->out_dir, name) >= (int)sizeof o->tmp)
            return px_err_set(e, PX_EINVAL, "output directory name too long");
        if (!(o->buf = malloc(OUT_CAP))) return px_err_set(e, PX_ENOMEM, "out of memory");
        if (!(o->f = fopen(o->tmp, "wb")))
            return px_err_set(e, PX_EIO, "cannot create '%s': %s", o->tmp, strerror(errno));
    }
    return 0;
}

int gen_outs_error(const gen *g, px_err *e)
{
    for (int t = 0; t <= PX_TAB__COUNT; t++)
        if (g->out[t].err)
            return px_err_set(e, PX_EIO, "cannot write '%s': %s", g->out[t].tmp, strerror(g->out[t].err));
    return 0;
}

/* Flushes and closes every file; on success (rc == 0) renames them into place,
 * otherwise removes them. Returns rc or the first close/rename error. */
int gen_outs_close(gen *g, int rc, px_err *e)
{
    for (int t = 0; t <= PX_TAB__COUNT; t++) {
        gen_out *o = &g->out[t];
        if (o->f) {
            gen_out_flush(o);
            if (fclose(o->f) != 0 && !o->err) o->err = errno ? errno : EIO;
            o->f = NULL;
        }
    }
    if (rc == 0) rc = gen_outs_error(g, e);
    for (int t = 0; t <= PX_TAB__COUNT; t++) {
        gen_out *o = &g->out[t];
        if (rc == 0 && o->buf && rename(o->tmp, o->path) != 0)
            rc = px_err_set(e, PX_EIO, "cannot rename '%s': %s", o->tmp, strerror(errno));
        else if (rc != 0 && o->buf)
            unlink(o->tmp);
        free(o->buf);
        o->buf = NULL;
    }
    return rc;
}
