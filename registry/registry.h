/* registry.h: versioned model registry with signed artifacts
 * This library is a placeholder until its issue lands; it builds and links so
 * the folder layout and dependency order are fixed from the start. */
#ifndef PROGNOS_REGISTRY_H
#define PROGNOS_REGISTRY_H

/* Returns a one-line description of what this library will hold (static string). */
const char *px_reg_purpose(void);

#endif
