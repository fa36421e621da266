/* features.c: feature-set definitions and the SQL feature-table builder (placeholder until its issue lands). */
#include "features/features.h"

const char *px_feat_purpose(void)
{
    return "feature-set definitions and the SQL feature-table builder";
}
