/* registry.c: placeholder until the registry lands (see registry.h). */
#include "registry/registry.h"
