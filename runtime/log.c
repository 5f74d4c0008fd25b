/*
 * log.c — debug output on stderr, by category (--debug CATS / FLOWRUN_DEBUG=aws,http,pg,sched
 * or "all"). Callers redact what they pass: this unit never sees raw secrets by contract.
 */
#include "flowrun.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char debug_cats[256];
static bool debug_loaded;

static void load(void)
{
    if (debug_loaded)
        return;
    debug_loaded = true;
    const char *env = getenv("FLOWRUN_DEBUG");
    if (env)
        snprintf(debug_cats, sizeof debug_cats, ",%s,", env);
}

void fr_debug_set(const char *cats)
{
    debug_loaded = true;
    snprintf(debug_cats, sizeof debug_cats, ",%s,", cats ? cats : "");
}

bool fr_debug_enabled(const char *category)
{
    load();
    if (!debug_cats[0])
        return false;
    if (strstr(debug_cats, ",all,") || strstr(debug_cats, ",1,"))
        return true;
    char needle[64];
    snprintf(needle, sizeof needle, ",%s,", category);
    return strstr(debug_cats, needle) != NULL;
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

/* log.debug_enabled(cat) -> bool; log.debug(cat, msg) writes when cat is on;
 * log.set_debug("aws,http") */
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
    fr_debug_set(luaL_optstring(L, 1, ""));
    return 0;
}

static int luaopen_log(lua_State *L)
{
    static const luaL_Reg f[] = {
        {"debug_enabled", l_enabled}, {"debug", l_debug}, {"set_debug", l_set_debug}, {NULL, NULL}};
    luaL_newlib(L, f);
    return 1;
}

FR_MODULE("log", luaopen_log)
