/* tap.h — a minimal TAP producer for the C unit tests (tests/c/). */
#ifndef FR_TAP_H
#define FR_TAP_H
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *msg)
{
    tap_n++;
    if (!cond)
        tap_failed++;
    printf("%s %d - %s\n", cond ? "ok" : "not ok", tap_n, msg);
    fflush(stdout);
    return cond;
}

static inline int tap_streq(const char *got, const char *want, const char *msg)
{
    int cond = got && want && strcmp(got, want) == 0;
    tap_ok(cond, msg);
    if (!cond)
        printf("#      got: %s\n# expected: %s\n", got ? got : "(null)", want ? want : "(null)");
    return cond;
}

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}
#endif
