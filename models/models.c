/* models.c: library set-up (GSL's error handler), algorithm names and the C
 * locale object used for printing and parsing numbers. */
#include "models/internal.h"
#include <gsl/gsl_errno.h>
#include <pthread.h>
#include <string.h>

static pthread_once_t gsl_once = PTHREAD_ONCE_INIT;
static void gsl_quiet(void)
{
    /* GSL's default handler calls abort(): a library must report, not kill its host. */
    gsl_set_error_handler_off();
}

void px_models_init(void)
{
    pthread_once(&gsl_once, gsl_quiet);
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

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

/* A thread-local switch (uselocale) instead of setlocale: setlocale changes the
 * whole process and is not safe while other threads format numbers. */
locale_t px_c_locale(void)
{
    pthread_once(&c_locale_once, c_locale_init);
    return c_locale;
}
