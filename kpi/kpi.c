/* kpi.c: risk-adjusted outcome KPIs and the executive report (placeholder until its issue lands). */
#include "kpi/kpi.h"

const char *px_kpi_purpose(void)
{
    return "risk-adjusted outcome KPIs and the executive report";
}
