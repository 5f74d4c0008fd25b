/*
 * fuzz.h — what the libFuzzer harnesses (tests/fuzz/fuzz_*.c) share: a fresh Lua state per
 * input (so that a crash reproduces from its input alone), a unit's module opened in it, and
 * invariant checks written in Lua, whose failure aborts (libFuzzer then saves the input).
 */
#ifndef FR_FUZZ_H
#define FR_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "flowrun.h"

/* Print why and abort: libFuzzer reports a crash and writes the input out. */
static inline void fuzz_die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz invariant broken: %s: %s\n", what, why ? why : "(no message)");
    abort();
}

static inline lua_CFunction fuzz_module(const char *name)
{
    for (fr_module_t *m = fr_modules(); m; m = m->next)
        if (!strcmp(m->name, name))
            return m->open;
    fuzz_die("module not registered", name);
    return NULL;
}

/* A new state with the base, string, table, math and utf8 libraries, the module `name` (when not
 * NULL) as global `M`, and the chunk `checks` compiled as global function `check`. */
static inline lua_State *fuzz_state(const char *name, const char *checks)
{
    lua_State *L = luaL_newstate();
    if (!L)
        fuzz_die("luaL_newstate", "out of memory");
    /* only the libraries the checks use: opening all of them costs more than most inputs */
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    if (name) {
        lua_pushcfunction(L, fuzz_module(name));
        lua_pushstring(L, name);
        lua_call(L, 1, 1);
        lua_setglobal(L, "M");
    }
    if (luaL_loadstring(L, checks) != LUA_OK)
        fuzz_die("the checks do not compile", lua_tostring(L, -1));
    lua_setglobal(L, "check");
    return L;
}

/* Call check(...) with the nargs values on the stack; it returns nothing when all holds, or a
 * string saying what broke. A Lua error inside check is a broken invariant too. */
static inline void fuzz_check(lua_State *L, int nargs, const char *what)
{
    lua_getglobal(L, "check");
    lua_insert(L, -nargs - 1);
    if (lua_pcall(L, nargs, 1, 0) != LUA_OK)
        fuzz_die(what, lua_tostring(L, -1));
    if (!lua_isnil(L, -1))
        fuzz_die(what, lua_tostring(L, -1));
    lua_pop(L, 1);
}

#endif
