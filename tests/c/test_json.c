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

    /* base64: the one implementation (json.base64_*, formerly also in sigv4.c) */
    static const struct {
        const char *plain, *enc;
    } vec[] = {{"", ""},
               {"f", "Zg=="},
               {"fo", "Zm8="},
               {"foo", "Zm9v"},
               {"foob", "Zm9vYg=="},
               {"fooba", "Zm9vYmE="},
               {"foobar", "Zm9vYmFy"}};
    int good = 0;
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        char enc[16], dec[16], why[96];
        size_t n = fr_base64_encode(vec[i].plain, strlen(vec[i].plain), enc), dn = 99;
        good += n == strlen(vec[i].enc) && !memcmp(enc, vec[i].enc, n) &&
                fr_base64_decode(vec[i].enc, n, dec, &dn, why, sizeof why) &&
                dn == strlen(vec[i].plain) && !memcmp(dec, vec[i].plain, dn);
    }
    tap_ok(good == 7, "base64: the RFC 4648 test vectors both ways");
    unsigned char all[256], back[256 + 3];
    char enc[400], why[96];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    good = 0;
    for (size_t n = 0; n <= 256; n++) {
        size_t en = fr_base64_encode(all, n, enc), dn = 0;
        good += en == 4 * ((n + 2) / 3) && fr_base64_decode(enc, en, back, &dn, why, sizeof why) &&
                dn == n && !memcmp(back, all, n);
    }
    tap_ok(good == 257, "base64: every length 0..256 round-trips, all byte values");
    size_t dn = 0;
    tap_ok(fr_base64_decode(" Zm9v\r\nYmFy\n", 12, back, &dn, why, sizeof why) && dn == 6 &&
               !memcmp(back, "foobar", 6),
           "base64: whitespace and line breaks are skipped");
    static const struct {
        const char *in, *why;
    } bad[] = {{"Zm9", "not a multiple of 4"},      {"Zm9vY", "not a multiple of 4"},
               {"Zm9=v", "data after the padding"}, {"Z===", "'=' at offset 1"},
               {"====", "'=' at offset 0"},         {"Zg==Zg==", "data after the padding"},
               {"Zg===", "'=' at offset 4"},        {"Zm9\x80", "byte 0x80 at offset 3"},
               {"Zm-_", "byte 0x2d at offset 2"},   {"Zm9v\0AAA", "byte 0x00 at offset 4"}};
    good = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = strlen(bad[i].in);
        if (i == sizeof bad / sizeof bad[0] - 1)
            n = 8; /* with its NUL byte */
        why[0] = 0;
        bool ok = fr_base64_decode(bad[i].in, n, back, &dn, why, sizeof why);
        if (!ok && strstr(why, bad[i].why))
            good++;
        else
            printf("# %s: %s\n", bad[i].in, ok ? "accepted" : why);
    }
    tap_ok(good == (int)(sizeof bad / sizeof bad[0]),
           "base64: malformed input is refused, saying where");

    lua_close(L);
    return tap_done();
}
