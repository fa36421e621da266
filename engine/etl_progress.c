/* etl_progress.c: the load's progress line on stderr (--progress): percent of
 * the batch's input bytes, and the server's phase (merging, indexing). */
#include "engine/etl_int.h"
#include <stdio.h>

/* ---- progress --------------------------------------------------------------- */

void etl_progress(etl_ctx *x, long long file_bytes_done)
{
    if (!x->p->progress || x->total_bytes <= 0) return;
    long long done = x->done_bytes + file_bytes_done;
    int pct = (int)(done * 100 / x->total_bytes);
    if (pct == x->last_draw && file_bytes_done != 0) return;
    x->last_draw = pct;
    char bar[41];
    int fill = pct * 40 / 100;
    for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
    bar[40] = '\0';
    fprintf(stderr, "\rloading %-28.28s [%s] %3d%%", x->in ? x->in->name : "", bar, pct > 100 ? 100 : pct);
    fflush(stderr);
}

void etl_progress_phase(etl_ctx *x, const char *phase)
{
    if (!x->p->progress || x->total_bytes <= 0) return;
    fprintf(stderr, "\r%-10s %-28.28s %-48s", phase, x->in ? x->in->name : "", "");
    fflush(stderr);
    x->last_draw = -1;
}

