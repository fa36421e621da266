/* models.h: logistic regression, GLMs and LibSVM models with evaluation
 * This library is a placeholder until its issue lands; it builds and links so
 * the folder layout and dependency order are fixed from the start. */
#ifndef PROGNOS_MODELS_H
#define PROGNOS_MODELS_H

/* Returns a one-line description of what this library will hold (static string). */
const char *px_model_purpose(void);

#endif
