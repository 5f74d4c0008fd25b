/*
 * fuzz_zlib.c — libFuzzer harness for runtime/zlib.c: the first two bytes are max_bytes, the rest
 * is given to zlib.gunzip, which returns at most max_bytes or a zlib.data / zlib.too_large error
 * object; what it returns gzips and gunzips back; any bytes gzip and gunzip back.
 */
#include "fuzz.h"

static const char *checks =
    "local s, max = ...\n"
    "local zlib = M\n"
    "local out, err = zlib.gunzip(s, max)\n"
    "if out == nil then\n"
    "  if type(err) ~= 'table' or (err.code ~= 'zlib.data' and err.code ~= 'zlib.too_large') then\n"
    "    return 'gunzip failed without a zlib error: ' .. tostring(err)\n"
    "  end\n"
    "else\n"
    "  if #out > max then return 'more than max_bytes' end\n"
    "  if zlib.gunzip(zlib.gzip(out), max) ~= out then return 'round trip of the output' end\n"
    "end\n"
    "if zlib.gunzip(zlib.gzip(s, #s % 10)) ~= s then return 'gzip round trip' end\n";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    lua_State *L = fuzz_state("zlib", checks);
    lua_pushlstring(L, (const char *)data + 2, size - 2);
    lua_pushinteger(L, data[0] << 8 | data[1]);
    fuzz_check(L, 2, "zlib");
    lua_close(L);
    return 0;
}
