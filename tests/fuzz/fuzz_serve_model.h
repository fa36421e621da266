/* fuzz_serve_model.h: the served model of the request-reader fuzz targets
 * (fuzz_predict, fuzz_v2): a numeric input, a flag, a categorical input with a
 * level that is not ASCII, and a dropped input; and the server they read for
 * (max_instances 16, cJSON allocating in the request arena as in the server).
 * Header-only: each target is one translation unit. */
#ifndef PX_FUZZ_SERVE_MODEL_H
#define PX_FUZZ_SERVE_MODEL_H
#include "serve/internal.h"
#include "tests/unit/serve_fixture.h"
#include <stdlib.h>

static char *fuzz_sex_levels[] = {"F", "M"};
static char *fuzz_adm_levels[] = {"elective", "emergency", "urgent", "\xc3\xa9tranger"};
static px_feature_info info[] = {
    {.name = "age_years", .kind = PX_COL_NUMERIC, .min = 18, .max = 104},
    {.name = "sex", .kind = PX_COL_CATEGORICAL, .nlevels = 2, .levels = fuzz_sex_levels},
    {.name = "los_days", .kind = PX_COL_NUMERIC, .min = 0, .max = 60},
    {.name = "cci_chf", .kind = PX_COL_NUMERIC, .min = 0, .max = 1},
    {.name = "admission_type", .kind = PX_COL_CATEGORICAL, .nlevels = 4, .levels = fuzz_adm_levels},
    {.name = "unused", .kind = PX_COL_NUMERIC, .min = 1, .max = 1, .dropped = 1},
};
#define K (sizeof info / sizeof info[0])
static srv_feat feat[K];
static srv_model model;
static px_server *server;

/* once per process: the model (version 1) and the server */
static void fuzz_serve_setup(void)
{
    fixture_model(&model, feat, info, K, 1);
    server = calloc(1, sizeof *server);
    if (!server) abort();
    server->p = px_serve_default_params();
    server->p.max_instances = 16;
    srv_cjson_hooks_install();
}
#endif
