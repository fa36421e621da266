/* kpi.h: risk-adjusted outcome KPIs and the executive report
 * This library is a placeholder until its issue lands; it builds and links so
 * the folder layout and dependency order are fixed from the start. */
#ifndef PROGNOS_KPI_H
#define PROGNOS_KPI_H

/* Returns a one-line description of what this library will hold (static string). */
const char *px_kpi_purpose(void);

#endif
