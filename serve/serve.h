/* serve.h: HTTP prediction and drift server
 * This library is a placeholder until its issue lands; it builds and links so
 * the folder layout and dependency order are fixed from the start. */
#ifndef PROGNOS_SERVE_H
#define PROGNOS_SERVE_H

/* Returns a one-line description of what this library will hold (static string). */
const char *px_http_purpose(void);

#endif
