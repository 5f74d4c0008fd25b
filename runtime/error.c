/*
 * error.c — the one place error objects are built: tables with metatable "flowrun.error"
 * holding code, message, retryable and whatever fields the raiser adds (status, request_id,
 * sqlstate, ...). __tostring gives "code: message", and so does concatenation. Lua gets
 * flow.core.error / is_error.
 */
#include "flowrun.h"

#include <stdarg.h>
#include <string.h>

#define ERROR_MT "flowrun.error"

static int l_error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    const char *code = lua_tostring(L, -2);
    const char *msg = lua_tostring(L, -1);
    if (code && msg)
        lua_pushfstring(L, "%s: %s", code, msg);
    else
        lua_pushstring(L, msg ? msg : code ? code : "error");
    return 1;
}

/* err .. "text" and "text" .. err read the error as its __tostring, so code written for
 * string errors ("failed: " .. err) keeps working when a primitive returns an error object. */
static int l_error_concat(lua_State *L)
{
    luaL_tolstring(L, 1, NULL);
    luaL_tolstring(L, 2, NULL);
    lua_concat(L, 2);
    return 1;
}

static void push_metatable(lua_State *L)
{
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, l_error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, l_error_concat);
        lua_setfield(L, -2, "__concat");
        lua_pushliteral(L, "flowrun.error");
        lua_setfield(L, -2, "__name");
    }
}

void fr_error_push(lua_State *L, const char *code, const char *message, bool retryable)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, retryable);
    lua_setfield(L, -2, "retryable");
    push_metatable(L);
    lua_setmetatable(L, -2);
}

int fr_error_raise(lua_State *L, const char *code, bool retryable, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *msg = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    fr_error_push(L, code, msg, retryable);
    return lua_error(L);
}

bool fr_error_is(lua_State *L, int idx, const char *code)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return false;
    luaL_getmetatable(L, ERROR_MT);
    bool is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!is || !code)
        return is;
    lua_getfield(L, idx, "code");
    const char *c = lua_tostring(L, -1);
    is = c && strcmp(c, code) == 0;
    lua_pop(L, 1);
    return is;
}

/* flow.error(code, message [, fields]) -> error object (fields copied in; retryable defaults
 * to false). Raises nothing. */
static int l_error(lua_State *L)
{
    const char *code = luaL_checkstring(L, 1);
    const char *msg = luaL_optstring(L, 2, code);
    fr_error_push(L, code, msg, false);
    if (lua_type(L, 3) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_settable(L, -4);
        }
    }
    return 1;
}

/* flow.is_error(v [, code]) -> boolean */
static int l_is_error(lua_State *L)
{
    lua_pushboolean(L, fr_error_is(L, 1, luaL_optstring(L, 2, NULL)));
    return 1;
}

/* flow.cancelled(v) -> is v the cancellation error? */
static int l_cancelled(lua_State *L)
{
    lua_pushboolean(L, fr_error_is(L, 1, "flow.cancelled"));
    return 1;
}

int fr_error_open(lua_State *L)
{
    static const luaL_Reg f[] = {
        {"error", l_error}, {"is_error", l_is_error}, {"cancelled", l_cancelled}, {NULL, NULL}};
    luaL_setfuncs(L, f, 0);
    push_metatable(L);
    lua_setfield(L, -2, "error_mt");
    return 0;
}
