/* etl_progress.c: the load's progress, reported through the caller's
 * px_etl_params.on_progress (the CLI draws the bar): percent of the batch's
 * input bytes, and the server's phase (merging, indexing). Never writes itself. */
#include "engine/etl_int.h"

void etl_progress(etl_ctx *x, long long file_bytes_done)
{
    if (!x->p->on_progress || x->total_bytes <= 0) return;
    long long done = x->done_bytes + file_bytes_done;
    int pct = (int)(done * 100 / x->total_bytes);
    if (pct == x->last_draw && file_bytes_done != 0) return;
    x->last_draw = pct;
    x->p->on_progress(x->p->progress_arg, "loading", x->in ? x->in->name : "", pct > 100 ? 100 : pct);
}

void etl_progress_phase(etl_ctx *x, const char *phase)
{
    if (!x->p->on_progress || x->total_bytes <= 0) return;
    x->p->on_progress(x->p->progress_arg, phase, x->in ? x->in->name : "", -1);
    x->last_draw = -1;
}
