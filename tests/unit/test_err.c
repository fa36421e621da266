/* test_err.c: px_err_wrap keeps the cause of a failure from below (message
 * and detail move into the detail, the hint stays) and tolerates NULL and
 * over-long causes. */
#include "engine/engine.h"
#include "check.h"

int main(void)
{
    px_err e;
    px_err_clear(&e);
    px_err_set(&e, PX_EDB, "relation \"kpi.results\" does not exist");
    px_err_detail(&e, "LINE 1: SELECT ...\n");
    px_err_hint(&e, "run prognos db migrate");
    CHECK_INT(px_err_wrap(&e, PX_EDB, "cannot store the KPI results of run %d", 7), PX_EDB);
    CHECK_STR(e.msg, "cannot store the KPI results of run 7");
    CHECK_STR(e.detail, "cause: relation \"kpi.results\" does not exist: LINE 1: SELECT ...");
    CHECK_STR(e.hint, "run prognos db migrate");

    /* code 0 keeps the cause's code; a cause without detail */
    px_err_clear(&e);
    px_err_set(&e, PX_EIO, "cannot open 'x.csv'");
    CHECK_INT(px_err_wrap(&e, 0, "cannot load batch %d", 3), PX_EIO);
    CHECK_STR(e.detail, "cause: cannot open 'x.csv'");
    CHECK_STR(e.hint, "");

    /* wrapping twice keeps the innermost reason inside the chain */
    px_err_wrap(&e, PX_EIO, "etl load failed");
    CHECK(strstr(e.detail, "cannot load batch 3") != NULL);
    CHECK(strstr(e.detail, "cannot open 'x.csv'") != NULL);

    /* an over-long cause is cut, never overflows */
    px_err_clear(&e);
    memset(e.msg, 'm', sizeof e.msg - 1);
    memset(e.detail, 'd', sizeof e.detail - 1);
    e.code = PX_EDB;
    px_err_wrap(&e, PX_EDB, "outer");
    CHECK_STR(e.msg, "outer");
    CHECK_INT(strlen(e.detail), sizeof e.detail - 1);

    CHECK_INT(px_err_wrap(NULL, PX_EIO, "nothing"), PX_EIO);
    return check_report("test_err");
}
