/* models.c: logistic regression, GLMs and LibSVM models with evaluation (placeholder until its issue lands). */
#include "models/models.h"

const char *px_model_purpose(void)
{
    return "logistic regression, GLMs and LibSVM models with evaluation";
}
