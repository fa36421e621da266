/* serve.c: HTTP prediction and drift server (placeholder until its issue lands). */
#include "serve/serve.h"

const char *px_http_purpose(void)
{
    return "HTTP prediction and drift server";
}
