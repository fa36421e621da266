/* features.h: feature-set definitions and the SQL feature-table builder
 * This library is a placeholder until its issue lands; it builds and links so
 * the folder layout and dependency order are fixed from the start. */
#ifndef PROGNOS_FEATURES_H
#define PROGNOS_FEATURES_H

/* Returns a one-line description of what this library will hold (static string). */
const char *px_feat_purpose(void);

#endif
