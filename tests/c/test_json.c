/* C unit test of json.c through a bare Lua state: no loop, no binary. */
#include "flowrun.h"
#include "tap.h"

#include <lualib.h>

static const char *roundtrip(lua_State *L, const char *doc)
{
    lua_settop(L, 0);
    if (!fr_json_decode(L, doc, strlen(doc)))
        return lua_tostring(L, -1);
    fr_json_encode(L, -1, false);
    return lua_tostring(L, -1);
}

static int encode_protected(lua_State *L)
{
    fr_json_encode(L, 1, false);
    return 1;
}

int main(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);

    tap_streq(roundtrip(L, "{\"b\":[1,2.5,null,true],\"a\":{}}"),
              "{\"a\":{},\"b\":[1,2.5,null,true]}", "round trip, keys sorted");
    tap_streq(roundtrip(L, "9223372036854775807"), "9223372036854775807", "int64 max exact");
    tap_streq(roundtrip(L, "-9223372036854775808"), "-9223372036854775808", "int64 min exact");
    tap_streq(roundtrip(L, "[]"), "[]", "an empty array stays an array");
    tap_streq(roundtrip(L, "{\"x\":[]}"), "{\"x\":[]}", "nested empty array");
    tap_streq(roundtrip(L, "1.0"), "1.0", "a real stays a real");
    tap_streq(roundtrip(L, "\"\\u00e9\\n\""), "\"\xc3\xa9\\n\"", "escapes and UTF-8");

    lua_settop(L, 0);
    tap_ok(!fr_json_decode(L, "{\"a\":", 5), "truncated input is refused");
    tap_ok(strstr(lua_tostring(L, -1), "line 1") != NULL, "the message says where");

    lua_settop(L, 0);
    fr_json_push_null(L);
    fr_json_push_null(L);
    tap_ok(lua_rawequal(L, 1, 2), "json.null is one value");
    tap_ok(fr_json_isnull(L, 1), "fr_json_isnull knows it");

    lua_settop(L, 0);
    lua_pushcfunction(L, encode_protected);
    lua_newtable(L);
    lua_pushcfunction(L, encode_protected);
    lua_setfield(L, -2, "f");
    tap_ok(lua_pcall(L, 1, 1, 0) != LUA_OK, "a function cannot be encoded");
    tap_ok(strstr(lua_tostring(L, -1), "at $.f") != NULL, "the error names the path");

    lua_close(L);
    return tap_done();
}
