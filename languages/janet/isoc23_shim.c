/* glibc 2.38 renamed strtol for C23 (binary literals): Debian 13's
   libjanet.a calls __isoc23_strtol, which Debian 12's glibc 2.36 lacks.
   Janet never parses "0b" prefixes through strtol, so plain strtol is
   the same function for it. */
#include <stdlib.h>
long __isoc23_strtol(const char *nptr, char **endptr, int base) {
    return strtol(nptr, endptr, base);
}
