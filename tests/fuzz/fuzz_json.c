/*
 * fuzz_json.c — libFuzzer harness for runtime/json.c: decode any bytes; what decodes must
 * encode (compact and pretty) and come back the same; base64 of any bytes round-trips, and
 * base64 decoding refuses with a json.base64 error object or gives bytes that re-encode.
 */
#include "fuzz.h"

static const char *checks =
    "local s = ...\n"
    "local json = M\n"
    "local ok, v = pcall(json.decode, s)\n"
    "if not ok then\n"
    "  if type(v) ~= 'table' or v.code ~= 'json.decode' then\n"
    "    return 'decode raised something else: ' .. tostring(v)\n"
    "  end\n"
    "else\n"
    "  local ok1, e1 = pcall(json.encode, v)\n"
    "  if not ok1 then\n"
    "    if tostring(e1):find('nested too deep', 1, true) then goto base64 end\n"
    "    return 'a decoded value does not encode: ' .. tostring(e1)\n"
    "  end\n"
    "  local e2 = json.encode(json.decode(e1))\n"
    "  if e1 ~= e2 then return 'round trip differs: ' .. e1 .. ' / ' .. e2 end\n"
    "  local p = json.encode(v, {pretty = true})\n"
    "  if json.encode(json.decode(p)) ~= e1 then return 'the pretty form differs' end\n"
    "end\n"
    "::base64::\n"
    "local b = json.base64_encode(s)\n"
    "if #b ~= 4 * ((#s + 2) // 3) then return 'base64 length' end\n"
    "if json.base64_decode(b) ~= s then return 'base64 round trip' end\n"
    "local d, err = json.base64_decode(s)\n"
    "if d then\n"
    "  if json.base64_decode(json.base64_encode(d)) ~= d then return 'base64 re-encode' end\n"
    "  if #d > #s // 4 * 3 + 3 then return 'base64 decoded too long' end\n"
    "elseif type(err) ~= 'table' or err.code ~= 'json.base64' then\n"
    "  return 'base64_decode failed without a json.base64 error: ' .. tostring(err)\n"
    "end\n";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    lua_State *L = fuzz_state("json", checks);
    lua_pushlstring(L, (const char *)data, size);
    fuzz_check(L, 1, "json");
    lua_close(L);
    return 0;
}
