/* registry.c: versioned model registry with signed artifacts (placeholder until its issue lands). */
#include "registry/registry.h"

const char *px_reg_purpose(void)
{
    return "versioned model registry with signed artifacts";
}
