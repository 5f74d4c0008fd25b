/*
 * fuzz_pg_values.c — libFuzzer harness for runtime/pg_values.c. The first byte picks a type
 * OID, the second the decoding flags; the rest is a field in PostgreSQL's text form, decoded
 * and checked against what the type allows:
 *   - a value the codec cannot read comes back as the very text;
 *   - an integer is what Lua itself reads from the text (int8 range, exact);
 *   - a float is strtod's reading; bool is t/f only; bytea is never longer than its text;
 *   - a rewritten timestamp differs from the text only by its 'T' (and ":00");
 * and the same bytes are encoded as parameters: a string goes as text exactly when Lua's own
 * strict UTF-8 check passes and it has no NUL byte, else in binary with no type; the bytes are
 * never changed. The bytea unescaper writes into a buffer of exactly the text's length.
 */
#include "../../runtime/pg_values.h"
#include "fuzz.h"

static const Oid oids[] = {16,   17,   18,   19,   20,   21,   23,   25,   26,   114,  142,  650,
                           700,  701,  705,  790,  869,  1042, 1043, 1082, 1083, 1114, 1184, 1186,
                           1266, 1700, 2278, 2950, 3802, 1000, 1001, 1002, 1003, 1005, 1007, 1009,
                           1014, 1015, 1016, 1021, 1022, 1028, 1115, 1182, 1183, 1185, 1187, 1231,
                           1270, 2951, 199,  3807, 791,  1041, 651,  143,  0,    99999};

static int l_dec(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    fr_pg_push_text(L, (Oid)luaL_checkinteger(L, 1), s, len, (int)luaL_checkinteger(L, 3));
    return 1;
}

/* enc(...) -> {{v =, fmt =, type =}, ...} */
static int l_enc(lua_State *L)
{
    int n = lua_gettop(L);
    fr_pg_params_t p;
    fr_pg_params_build(L, 1, n, &p);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 3);
        if (p.vals[i]) {
            lua_pushlstring(L, p.vals[i], (size_t)p.lens[i]);
            lua_setfield(L, -2, "v");
        }
        lua_pushinteger(L, p.fmts[i]);
        lua_setfield(L, -2, "fmt");
        lua_pushinteger(L, p.types[i]);
        lua_setfield(L, -2, "type");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static const char *checks =
    "local oid, flags, s = ...\n"
    "local ok, v = pcall(dec, oid, s, flags)\n"
    "if not ok then return 'decode raised: ' .. tostring(v) end\n"
    "local t = math.type(v) or type(v)\n"
    "local ints = {[20] = true, [21] = true, [23] = true, [26] = true}\n"
    "local function numeric_text(x) return x:find('^[+-]?%d+$') end\n"
    "local lua_int = numeric_text(s) and math.type(tonumber(s)) == 'integer'\n"
    "if ints[oid] or (oid == 1700 and flags & 1 ~= 0 and lua_int) then\n"
    "  if lua_int and (t ~= 'integer' or v ~= tonumber(s)) then\n"
    "    return 'integer ' .. tostring(v) .. ' from ' .. s\n"
    "  end\n"
    "  if not lua_int and v ~= s then return 'not an integer, yet not the text: ' .. s end\n"
    "elseif oid == 1700 and flags & 1 == 0 then\n"
    "  if v ~= s then return 'numeric as text changed' end\n"
    "elseif oid == 700 or oid == 701 or oid == 1700 then\n"
    "  if t == 'float' then\n"
    "    local want = tonumber(s) -- Lua reads \"123\" as an integer: as a float it rounds alike\n"
    "    if math.type(want) == 'integer' then want = want + 0.0 end\n"
    "    local special = s:lower():find('^[+-]?inf') or s:lower():find('^[+-]?nan')\n"
    "    if not special and want ~= v and not (v ~= v) then return 'float ' .. v .. ' from ' .. s "
    "end\n"
    "  elseif v ~= s then return 'not a float, yet not the text' end\n"
    "elseif oid == 16 then\n"
    "  if (s == 't' or s == 'f') ~= (t == 'boolean') then return 'bool from ' .. s end\n"
    "  if t ~= 'boolean' and v ~= s then return 'bool fallback' end\n"
    "elseif oid == 17 then\n"
    "  if t ~= 'string' or #v > #s then return 'bytea longer than its text' end\n"
    "elseif oid == 1114 or oid == 1184 then\n"
    "  if v ~= s then\n"
    "    local back = v\n"
    "    if #v == #s + 3 then back = v:sub(1, -4) end\n"
    "    if #back ~= #s or back:gsub('T', ' ', 1) ~= s then return 'timestamp ' .. v .. ' from ' "
    ".. s end\n"
    "  end\n"
    "elseif oid == 114 or oid == 3802 then\n"
    "  -- a document comes back as a value; text that is none as the text\n"
    "elseif t == 'table' then\n"
    "  if not s:find('^[%[{]') then return 'an array from ' .. s end\n"
    "elseif v ~= s then\n"
    "  return 'type ' .. oid .. ' changed its text'\n"
    "end\n"
    "local p = enc(s, #s, #s / 7, flags & 1 == 1, nil)\n"
    "local text_ok = utf8.len(s) ~= nil and not s:find('\\0', 1, true)\n"
    "if p[1].v ~= s then return 'a string parameter changed' end\n"
    "if text_ok ~= (p[1].fmt == 0) then return 'text or binary decided wrong' end\n"
    "if not text_ok and p[1].type ~= 0 then return 'binary string with a type' end\n"
    "if p[2].v ~= tostring(#s) then return 'integer parameter' end\n"
    "if tonumber(p[3].v) ~= #s / 7 then return 'float parameter ' .. p[3].v end\n"
    "if p[5].v ~= nil then return 'nil parameter' end\n";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 2)
        return 0;
    const char *s = (const char *)data + 2;
    size_t len = size - 2;
    /* the unescaper alone, into exactly len bytes: ASan sees any overrun */
    char *out = malloc(len ? len : 1);
    if (fr_pg_unescape_bytea(s, len, out) > len)
        fuzz_die("unescape_bytea", "longer than its input");
    free(out);
    lua_State *L = fuzz_state(NULL, checks);
    lua_register(L, "dec", l_dec);
    lua_register(L, "enc", l_enc);
    lua_pushinteger(L, oids[data[0] % (sizeof oids / sizeof oids[0])]);
    lua_pushinteger(L, data[1] & 1);
    lua_pushlstring(L, s, len);
    fuzz_check(L, 3, "pg_values");
    lua_close(L);
    return 0;
}
