/* models.c: library set-up (GSL's error handler) and algorithm names. */
#include "models/models.h"
#include <gsl/gsl_errno.h>
#include <string.h>

void px_models_init(void)
{
    /* GSL's default handler calls abort(): a library must report, not kill its host. */
    gsl_set_error_handler_off();
}

static const char *const algo_names[] = {"logit", "poisson", "svc", "svr"};

const char *px_algo_name(px_algo a)
{
    return (unsigned)a < sizeof algo_names / sizeof algo_names[0] ? algo_names[a] : "unknown";
}

int px_algo_parse(const char *s, px_algo *a)
{
    for (unsigned i = 0; i < sizeof algo_names / sizeof algo_names[0]; i++)
        if (strcmp(s, algo_names[i]) == 0) {
            *a = (px_algo)i;
            return 0;
        }
    return PX_EINVAL;
}
