/*
 * log.c — debug output on stderr, by category (--debug CATS / FLOWRUN_DEBUG=aws,http,pg,sched
 * or "all"). The list of categories lives here and nowhere else: fr_debug_set refuses a name
 * that is not in it and says which names exist. Callers redact what they pass: this unit never
 * sees raw secrets by contract.
 */
#include "flowrun.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Every debug category; "all" turns on every one. */
static const char *const categories[] = {"aws", "http", "pg", "sched", "all"};
#define NCATS (sizeof categories / sizeof categories[0])

static bool enabled[NCATS];
static bool debug_loaded;

static int category_index(const char *name, size_t len)
{
    for (size_t i = 0; i < NCATS; i++)
        if (strlen(categories[i]) == len && strncmp(categories[i], name, len) == 0)
            return (int)i;
    return -1;
}

const char *fr_debug_known(void)
{
    return "aws, http, pg, sched, all";
}

/* Parse "aws,http" into `on`; on an unknown name copy it into bad and return false. */
static bool parse(const char *cats, bool on[NCATS], char *bad, size_t badlen)
{
    memset(on, 0, NCATS * sizeof on[0]);
    const char *p = cats ? cats : "";
    while (*p) {
        size_t len = strcspn(p, ", ");
        if (len > 0) {
            int i = category_index(p, len);
            if (i < 0) {
                snprintf(bad, badlen, "%.*s", (int)(len < 64 ? len : 64), p);
                return false;
            }
            on[i] = true;
        }
        p += len;
        p += strspn(p, ", ");
    }
    return true;
}

static void load(void)
{
    if (debug_loaded)
        return;
    debug_loaded = true;
    const char *env = getenv("FLOWRUN_DEBUG");
    char bad[80];
    if (env && !parse(env, enabled, bad, sizeof bad)) {
        /* no caller to return the error to: say so once, and keep what was understood */
        fprintf(stderr,
                "flowrun: warning: FLOWRUN_DEBUG: unknown debug category '%s' (known: %s)\n", bad,
                fr_debug_known());
        memset(enabled, 0, sizeof enabled);
        for (const char *p = env; *p;) {
            size_t len = strcspn(p, ", ");
            int i = category_index(p, len);
            if (i >= 0)
                enabled[i] = true;
            p += len;
            p += strspn(p, ", ");
        }
    }
}

void fr_debug_init(void)
{
    load();
}

bool fr_debug_set(const char *cats, char *bad, size_t badlen)
{
    bool on[NCATS];
    char tmp[80];
    if (!parse(cats, on, bad ? bad : tmp, bad ? badlen : sizeof tmp))
        return false; /* nothing changes */
    memcpy(enabled, on, sizeof enabled);
    debug_loaded = true;
    return true;
}

bool fr_debug_enabled(const char *category)
{
    load();
    if (enabled[NCATS - 1]) /* all */
        return true;
    int i = category_index(category, strlen(category));
    return i >= 0 && enabled[i];
}

void fr_log(const char *category, const char *fmt, ...)
{
    char ts[32];
    double t = fr_time();
    time_t secs = (time_t)t;
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    fprintf(stderr, "[%s.%03d %s] ", ts, (int)((t - (double)secs) * 1000), category);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Lua side of sys.set_debug and log.set_debug: the categories at idx (nil: none) -> true, or
 * nil, err (code sys.EINVAL, field category) naming the unknown one; nothing changes then. */
int fr_debug_set_lua(lua_State *L, int idx)
{
    const char *cats = luaL_optstring(L, idx, "");
    char bad[80];
    if (!fr_debug_set(cats, bad, sizeof bad)) {
        lua_pushnil(L);
        lua_pushfstring(L, "unknown debug category '%s' (known: %s)", bad, fr_debug_known());
        fr_error_push(L, "sys.EINVAL", lua_tostring(L, -1), false);
        lua_remove(L, -2);
        lua_pushstring(L, bad);
        lua_setfield(L, -2, "category");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* log.debug_enabled(cat) -> bool; log.debug(cat, msg) writes when cat is on;
 * log.set_debug("aws,http") -> true | nil, err (an unknown category; nothing changes) */
static int l_enabled(lua_State *L)
{
    lua_pushboolean(L, fr_debug_enabled(luaL_checkstring(L, 1)));
    return 1;
}

static int l_debug(lua_State *L)
{
    const char *cat = luaL_checkstring(L, 1);
    if (fr_debug_enabled(cat))
        fr_log(cat, "%s", luaL_checkstring(L, 2));
    return 0;
}

static int l_set_debug(lua_State *L)
{
    return fr_debug_set_lua(L, 1);
}

static int luaopen_log(lua_State *L)
{
    static const luaL_Reg f[] = {
        {"debug_enabled", l_enabled}, {"debug", l_debug}, {"set_debug", l_set_debug}, {NULL, NULL}};
    luaL_newlib(L, f);
    return 1;
}

FR_MODULE("log", luaopen_log)
