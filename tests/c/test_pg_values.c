/*
 * test_pg_values.c — the PostgreSQL value codec (runtime/pg_values.c) alone: every type it
 * reads from PostgreSQL's text output, every Lua value it turns into a parameter, and
 * malformed input (out-of-range integers, bad floats and dates, truncated and broken arrays,
 * odd bytea) that must come back as its text, never as a wrong value. The checks are Lua
 * chunks calling small C bindings, so each reads as the values it is about.
 */
#include "pg_values.h"
#include "tap.h"

#include <lualib.h>

/* dec(oid, text [, numeric_as_number]) -> the decoded value */
static int l_dec(lua_State *L)
{
    Oid oid = (Oid)luaL_checkinteger(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    fr_pg_push_text(L, oid, s, len, lua_toboolean(L, 3) ? FR_PG_NUMERIC_NUMBER : 0);
    return 1;
}

/* enc(...) -> {{v = string | nil, fmt = 0 | 1, type = oid}, ...} */
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
        lua_pushboolean(L, fr_pg_param_needs_type(p.fmts[i], p.types[i]));
        lua_setfield(L, -2, "needs_type");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_invalid_at(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, (lua_Integer)fr_pg_text_invalid_at(s, len));
    return 1;
}

static int l_tname(lua_State *L)
{
    lua_pushstring(L, fr_pg_type_name((Oid)luaL_checkinteger(L, 1)));
    return 1;
}

static int l_ok(lua_State *L)
{
    tap_ok(lua_toboolean(L, 1), luaL_checkstring(L, 2));
    return 0;
}

static int l_diag(lua_State *L)
{
    printf("# %s\n", luaL_checkstring(L, 1));
    return 0;
}

/* Run a chunk of checks; a chunk that raises is one failed test. */
static void run(lua_State *L, const char *name, const char *code)
{
    printf("# %s\n", name);
    if (luaL_loadstring(L, code) != LUA_OK || lua_pcall(L, 0, 0, 0) != LUA_OK) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", name, lua_tostring(L, -1));
        tap_ok(0, msg);
        lua_pop(L, 1);
    }
}

/* Helpers shared by every chunk: eq() compares deeply (NaN equals NaN) and reports. */
static const char *prelude =
    "local function same(a, b)\n"
    "  if a ~= a and b ~= b then return true end\n"
    "  if math.type(a) ~= math.type(b) then return false end\n"
    "  if type(a) ~= 'table' or type(b) ~= 'table' then return a == b end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "local function show(v)\n"
    "  if type(v) == 'string' then return string.format('%q', v) end\n"
    "  if type(v) ~= 'table' then return tostring(v) .. ' (' .. (math.type(v) or type(v)) .. ')' "
    "end\n"
    "  local keys = {}\n"
    "  for k in pairs(v) do keys[#keys + 1] = k end\n"
    "  table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)\n"
    "  local out = {}\n"
    "  for _, k in ipairs(keys) do out[#out + 1] = tostring(k) .. '=' .. show(v[k]) end\n"
    "  return '{' .. table.concat(out, ', ') .. '}'\n"
    "end\n"
    "function eq(got, want, msg)\n"
    "  msg = msg or show(want)\n"
    "  local good = same(got, want)\n"
    "  ok(good, msg)\n"
    "  if not good then diag('     got: ' .. show(got)); diag('expected: ' .. show(want)) end\n"
    "end\n"
    "function raises(f, pattern, msg)\n"
    "  local good, err = pcall(f)\n"
    "  ok(not good and tostring(err):find(pattern) ~= nil, msg)\n"
    "  if good or not tostring(err):find(pattern) then diag('got: ' .. tostring(err)) end\n"
    "end\n";

int main(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_register(L, "dec", l_dec);
    lua_register(L, "enc", l_enc);
    lua_register(L, "invalid_at", l_invalid_at);
    lua_register(L, "tname", l_tname);
    lua_register(L, "ok", l_ok);
    lua_register(L, "diag", l_diag);
    fr_json_push_null(L);
    lua_setglobal(L, "null");
    fr_pg_push_bytea_mt(L);
    lua_setglobal(L, "bytea_mt");
    if (luaL_dostring(L, prelude) != LUA_OK) {
        tap_ok(0, lua_tostring(L, -1));
        return tap_done();
    }

    run(L, "type names",
        "eq(tname(23), 'int4'); eq(tname(1009), 'text[]'); eq(tname(3802), 'jsonb')\n"
        "eq(tname(1184), 'timestamptz'); eq(tname(99999), nil, 'an unknown OID has no name')\n");

    run(L, "bool",
        "eq(dec(16, 't'), true, 't'); eq(dec(16, 'f'), false, 'f')\n"
        "eq(dec(16, 'true'), 'true', 'not PostgreSQL output: the text')\n"
        "eq(dec(16, ''), '', 'empty: the text'); eq(dec(16, 'tt'), 'tt', 'too long: the text')\n");

    run(L, "integers: int2, int4, int8, oid",
        "eq(dec(21, '7'), 7, 'int2'); eq(dec(23, '-2147483648'), -2147483648, 'int4 min')\n"
        "eq(dec(20, '9223372036854775807'), math.maxinteger, 'int8 max exact')\n"
        "eq(dec(20, '-9223372036854775808'), math.mininteger, 'int8 min exact')\n"
        "eq(dec(26, '4000000000'), 4000000000, 'oid above int4')\n"
        "eq(dec(20, '9223372036854775808'), '9223372036854775808', 'one past int8 max: text')\n"
        "eq(dec(20, '-9223372036854775809'), '-9223372036854775809', 'one past int8 min: text')\n"
        "eq(dec(20, '99999999999999999999999'), '99999999999999999999999', 'far out: text')\n"
        "for _, bad in ipairs{'', '-', '+', '12a', ' 1', '1 ', '1.0', '0x10', '--1'} do\n"
        "  eq(dec(23, bad), bad, 'malformed int4 ' .. string.format('%q', bad) .. ': text')\n"
        "end\n");

    run(L, "floats: float4, float8",
        "eq(dec(700, '1.5'), 1.5, 'float4'); eq(dec(701, '0.1'), 0.1, 'float8 exact')\n"
        "eq(dec(701, '1e+300'), 1e300); eq(dec(701, '-0'), -0.0)\n"
        "eq(dec(701, 'Infinity'), math.huge); eq(dec(701, '-Infinity'), -math.huge)\n"
        "local nan = dec(701, 'NaN'); ok(nan ~= nan, 'NaN')\n"
        "eq(math.type(dec(701, '3')), 'float', 'a whole float8 is a float')\n"
        "for _, bad in ipairs{'', 'abc', '1.5x', '0x10', ' 1', '1e', 'in', ('9'):rep(500),\n"
        "    '\\vInfinity', '\\t1.5', '\\n2', '\\f3', '\\r4'} do -- fuzz_pg_values found \\v\n"
        "  eq(dec(701, bad), bad, 'malformed float8 ' .. #bad .. ' bytes: text')\n"
        "end\n");

    run(L, "numeric: exact strings, or numbers when asked",
        "eq(dec(1700, '12345678901234567890.123456789012'), '12345678901234567890.123456789012')\n"
        "eq(dec(1700, '0.10'), '0.10', 'trailing zeros kept'); eq(dec(1700, 'NaN'), 'NaN')\n"
        "eq(dec(1700, '12.5', true), 12.5, 'number mode: float')\n"
        "eq(dec(1700, '42', true), 42, 'number mode: integer')\n"
        "eq(dec(1700, '9223372036854775807', true), math.maxinteger, 'int8 max stays exact')\n"
        "eq(math.type(dec(1700, '123456789012345678901234', true)), 'float', 'too big: float')\n"
        "local n = dec(1700, 'NaN', true); ok(n ~= n, 'NaN as a number')\n"
        "eq(dec(1700, 'Infinity', true), math.huge, 'numeric infinity (PostgreSQL 14)')\n"
        "eq(dec(1700, '1.2.3', true), '1.2.3', 'malformed: text'); eq(dec(1700, '', true), '')\n");

    run(L, "text-like types and the rest come as their text",
        "for _, oid in ipairs{25, 1043, 1042, 19, 18, 2950, 1082, 1083, 1266, 1186, 869, 650, "
        "790, 142, 705, 99999} do\n"
        "  eq(dec(oid, 'x y \\0 \\255'), 'x y \\0 \\255', 'oid ' .. oid .. ': the bytes as they "
        "are')\n"
        "end\n"
        "eq(dec(1042, 'ab  '), 'ab  ', 'bpchar padding kept')\n");

    run(L, "json and jsonb",
        "eq(dec(3802, '{\"a\":[1,2.5,null],\"b\":{}}'), {a = {1, 2.5, null}, b = {}}, 'jsonb')\n"
        "eq(dec(114, '[9223372036854775807]'), {math.maxinteger}, 'json: int64 exact')\n"
        "eq(dec(3802, '\"s\"'), 's', 'a scalar'); eq(dec(3802, 'null'), null, 'JSON null')\n"
        "eq(dec(3802, '{\"a\":'), '{\"a\":', 'truncated JSON: the text')\n"
        "eq(dec(114, ''), '', 'empty: the text')\n");

    run(L, "bytea: hex and escape forms",
        "local all = {}\n"
        "for i = 0, 255 do all[#all + 1] = string.char(i) end\n"
        "all = table.concat(all)\n"
        "local hex = '\\\\x' .. all:gsub('.', function(c) return ('%02x'):format(c:byte()) end)\n"
        "eq(dec(17, hex), all, 'hex: every byte value')\n"
        "eq(dec(17, '\\\\x00FF41'), '\\0\\255A', 'hex: upper case digits')\n"
        "eq(dec(17, '\\\\x'), '', 'hex: empty'); eq(dec(17, ''), '', 'escape: empty')\n"
        "eq(dec(17, 'ab\\\\\\\\c\\\\001\\\\377'), 'ab\\\\c\\1\\255', 'escape: \\\\\\\\ and "
        "octal')\n"
        "eq(dec(17, '\\\\x0g12'), '\\18', 'hex: a bad pair is skipped as libpq does')\n"
        "eq(dec(17, '\\\\x123'), '\\18', 'hex: a lone digit at the end is dropped')\n"
        "eq(dec(17, 'a\\\\'), 'a', 'escape: a trailing backslash is dropped')\n"
        "eq(dec(17, '\\\\8x'), '8x', 'escape: an unknown escape keeps what follows')\n"
        "eq(dec(17, '\\\\400'), '400', 'escape: octal above \\\\377 is not an escape')\n");

    run(L, "timestamps as ISO 8601",
        "eq(dec(1114, '2024-02-29 13:14:15.123456'), '2024-02-29T13:14:15.123456')\n"
        "eq(dec(1114, '2024-02-29 13:14:15'), '2024-02-29T13:14:15')\n"
        "eq(dec(1184, '2024-02-29 13:14:15+00'), '2024-02-29T13:14:15+00:00', '+hh gets :00')\n"
        "eq(dec(1184, '2024-01-01 05:30:00+05:30'), '2024-01-01T05:30:00+05:30')\n"
        "eq(dec(1184, '1850-01-01 00:00:00-00:01:15'), '1850-01-01T00:00:00-00:01:15', "
        "'an offset with seconds')\n"
        "eq(dec(1114, '10000-01-01 00:00:00'), '10000-01-01T00:00:00', 'a five-digit year')\n"
        "for _, same in ipairs{'infinity', '-infinity', '0044-03-15 12:00:00 BC', "
        "'2024-02-29T13:14:15', 'Thu Feb 29 13:14:15 2024', '2024-1-02 03:04:05', "
        "'2024-02-29 13:14', '2024-02-29 13:14:15.', '2024-02-29 13:14:15+', "
        "'2024-02-29 13:14:15+1', '24-02-29 13:14:15', '2024-02-29 13:14:15 ', "
        "'2024-02-29  13:14:15', '2024-02-29 13:14:15' .. ('0'):rep(60)} do\n"
        "  eq(dec(1184, same), same, 'left as it is: ' .. same:sub(1, 40))\n"
        "end\n"
        "eq(dec(1114, '2024-02-29 13:14:15+01'), '2024-02-29 13:14:15+01', "
        "'an offset on a timestamp without time zone: text')\n");

    run(L, "arrays",
        "eq(dec(1007, '{1,2,NULL,4}'), {1, 2, null, 4}, 'int4[] with NULL')\n"
        "eq(dec(1016, '{9223372036854775807}'), {math.maxinteger}, 'int8[] exact')\n"
        "eq(dec(1009, '{\"a,b\",\"q\\\\\"uote\",\"back\\\\\\\\slash\",\"NULL\",NULL,\"\"}'),\n"
        "   {'a,b', 'q\"uote', 'back\\\\slash', 'NULL', null, ''}, 'text[]: quoting, NULL')\n"
        "eq(dec(1007, '{{1,2},{3,4}}'), {{1, 2}, {3, 4}}, 'two dimensions')\n"
        "eq(dec(1000, '{t,f}'), {true, false}, 'bool[]')\n"
        "eq(dec(1231, '{1.10,2}'), {'1.10', '2'}, 'numeric[] exact')\n"
        "eq(dec(1231, '{1.5,2}', true), {1.5, 2}, 'numeric[] as numbers')\n"
        "eq(dec(3807, '{\"{\\\\\"a\\\\\": 1}\",\"[2]\"}'), {{a = 1}, {2}}, 'jsonb[]')\n"
        "eq(dec(1001, '{\"\\\\\\\\x0001\"}'), {'\\0\\1'}, 'bytea[]')\n"
        "eq(dec(1115, '{\"2024-01-02 03:04:05\"}'), {'2024-01-02T03:04:05'}, 'timestamp[]')\n"
        "eq(dec(1007, '{}'), {}, 'empty'); eq(dec(1007, '[0:1]={7,8}'), {7, 8}, 'bounds')\n"
        "eq(dec(1007, '[1:2][-1:0]={{1,2},{3,4}}'), {{1, 2}, {3, 4}}, 'bounds, 2 dims')\n"
        "eq(dec(1007, '{abc}'), {'abc'}, 'an element its type cannot read: its text')\n"
        "eq(dec(1182, '{2024-01-02}'), {'2024-01-02'}, 'date[]')\n"
        "local deep = ('{'):rep(70) .. ('}'):rep(70)\n"
        "for _, bad in ipairs{'{1,2', '{1,,2}', '{\"abc}', '{1}x', '[0:1]{1}', '[0:1={1}', "
        "'{{1},2', '{1,2}}', '{', '{\"a\\\\', '{a\"b}', '{a\\\\b}', '[x:1]={1}', "
        "'[1:2]', '{1 ,2}', deep} do\n"
        "  eq(dec(1007, bad), bad, 'malformed array ' .. bad:sub(1, 20) .. ': the text')\n"
        "end\n"
        "eq(dec(1009, '{\"unterminated}'), '{\"unterminated}', 'an unterminated quote: text')\n");

    run(L, "parameters: Lua values to what is sent",
        "local p = enc(nil, null, true, false, 42, math.mininteger, 1/3, 0/0, math.huge, "
        "-math.huge, 'text', '', {a = 1}, setmetatable({'\\0\\255'}, bytea_mt))\n"
        "eq(p[1], {fmt = 0, type = 0, needs_type = false}, 'nil is NULL')\n"
        "eq(p[2], {fmt = 0, type = 0, needs_type = false}, 'json.null is NULL')\n"
        "eq(p[3], {v = 't', fmt = 0, type = 16, needs_type = false}, 'true is bool')\n"
        "eq(p[4].v, 'f')\n"
        "eq(p[5], {v = '42', fmt = 0, type = 0, needs_type = false}, 'an integer: untyped text')\n"
        "eq(p[6].v, '-9223372036854775808', 'int64 min exact')\n"
        "eq(tonumber(p[7].v), 1/3, 'a float: 17 significant digits, exact')\n"
        "eq(p[8].v, 'NaN'); eq(p[9].v, 'Infinity'); eq(p[10].v, '-Infinity')\n"
        "eq(p[11], {v = 'text', fmt = 0, type = 0, needs_type = false}, 'a string: text')\n"
        "eq(p[12].v, '', 'the empty string is not NULL')\n"
        "eq(p[13].v, '{\"a\":1}', 'a table: JSON')\n"
        "eq(p[14], {v = '\\0\\255', fmt = 1, type = 17, needs_type = false}, "
        "'pg.bytea: binary bytea')\n");

    run(L, "parameters: strings that are not text are marked for the server's say",
        "for _, s in ipairs{'caf\\xe9', 'a\\0b', '\\xc0\\xaf', '\\xed\\xa0\\x80', "
        "'\\xf4\\x90\\x80\\x80', '\\xe2\\x82', '\\xff'} do\n"
        "  local p = enc(s)[1]\n"
        "  eq(p, {v = s, fmt = 1, type = 0, needs_type = true}, 'binary, no type: ' .. "
        "s:gsub('.', function(c) return ('%02x'):format(c:byte()) end))\n"
        "end\n"
        "for _, s in ipairs{'h\\xc3\\xa9llo', '\\u{10FFFF}', '\\u{FFFF}', '\\u{80}', "
        "'\\u{7FF}', '\\u{800}', '\\u{10000}', 'plain'} do\n"
        "  eq(enc(s)[1].fmt, 0, 'valid UTF-8 goes as text: ' .. #s .. ' bytes')\n"
        "end\n"
        "eq(invalid_at('caf\\xe9'), 3, 'offset of the first bad byte')\n"
        "eq(invalid_at('ab\\0'), 2, 'a NUL byte'); eq(invalid_at('fine'), 4, 'all good: the "
        "length')\n"
        "eq(invalid_at('\\xe2\\x82\\xac\\xe2\\x82'), 3, 'a sequence cut short')\n");

    run(L, "parameters: misuse raises, naming the parameter",
        "raises(function() enc(1, function() end) end, 'parameter %$2: cannot send a function', "
        "'a function')\n"
        "raises(function() enc(setmetatable({}, bytea_mt)) end, 'parameter %$1: pg.bytea value "
        "without a string', 'pg.bytea without its string')\n"
        "raises(function() enc({f = print}) end, 'cannot be encoded', 'a table JSON cannot hold')\n"
        "local many = {}\n"
        "for i = 1, 65536 do many[i] = i end\n"
        "raises(function() enc(table.unpack(many)) end, 'too many query parameters', "
        "'more than 65535')\n");

    run(L, "round trips through both directions",
        "for _, v in ipairs{0, 1, -1, math.maxinteger, math.mininteger, 2^53 + 1} do\n"
        "  local i = math.tointeger(v)\n"
        "  eq(dec(20, enc(i)[1].v), i, 'int8 ' .. i)\n"
        "end\n"
        "for _, v in ipairs{0.1, 1/3, 1e300, -2.5e-300, 2^-1074, math.huge, -math.huge} do\n"
        "  eq(dec(701, enc(v)[1].v), v, 'float8 ' .. tostring(v))\n"
        "end\n"
        "local v = {a = {1, 2}, b = 'x', c = {d = true}}\n"
        "eq(dec(3802, enc(v)[1].v), v, 'jsonb table')\n");

    lua_close(L);
    return tap_done();
}
