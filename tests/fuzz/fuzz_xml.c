/*
 * fuzz_xml.c — libFuzzer harness for runtime/xml.c: decode any bytes into a tree of nodes or an
 * xml.decode error object with a position; printable text escaped with xml.escape comes back
 * unchanged as element text and as an attribute.
 */
#include "fuzz.h"

static const char *checks =
    "local s = ...\n"
    "local xml = M\n"
    "local r, err = xml.decode(s)\n"
    "if r == nil then\n"
    "  if type(err) ~= 'table' or err.code ~= 'xml.decode' or\n"
    "      not err.message:find('^invalid XML at line %d+, column %d+: ') then\n"
    "    return 'a failure without an xml.decode error: ' .. tostring(err)\n"
    "  end\n"
    "else\n"
    "  local function walk(n)\n"
    "    if type(n) ~= 'table' or type(n.name) ~= 'string' then return 'not a node' end\n"
    "    if n.text ~= nil and type(n.text) ~= 'string' then return 'text is not a string' end\n"
    "    if n.attrs ~= nil then\n"
    "      for k, v in pairs(n.attrs) do\n"
    "        if type(k) ~= 'string' or type(v) ~= 'string' then return 'attrs' end\n"
    "      end\n"
    "    end\n"
    "    for i = 1, #n do local e = walk(n[i]); if e then return e end end\n"
    "  end\n"
    "  local e = walk(r)\n"
    "  if e then return e end\n"
    "end\n"
    "if not s:find('[^\\t\\n\\32-\\126]') then\n"
    "  local r2, err2 = xml.decode('<a>' .. xml.escape(s) .. '</a>')\n"
    "  if not r2 then return 'escaped text does not parse: ' .. tostring(err2) end\n"
    "  if r2.text ~= s then return 'escaped text comes back changed' end\n"
    "  local r3 = xml.decode('<a v=\"' .. xml.escape(s) .. '\"/>')\n"
    "  if not r3 then return 'an escaped attribute does not parse' end\n"
    "  local want = s:gsub('[\\t\\n]', ' ') -- attribute values are normalised so\n"
    "  if (r3.attrs or {}).v ~= want then return 'an escaped attribute comes back changed' end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    lua_State *L = fuzz_state("xml", checks);
    lua_pushlstring(L, (const char *)data, size);
    fuzz_check(L, 1, "xml");
    lua_close(L);
    return 0;
}
