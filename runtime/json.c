/*
 * json.c — JSON <-> Lua with jansson (module "json"). Pure: no loop.
 *
 * Integers stay exact (Lua integers <-> JSON integers, int64); JSON reals become floats and
 * floats are written with a decimal point, so 1 and 1.0 survive a round trip. json.null is a
 * unique userdata (pg.null is the same value). An empty Lua table is written as {} unless it
 * was marked with json.array(t); decoding marks empty arrays the same way, so a decoded
 * document encodes back the same. Binary data goes through json.base64_encode/decode (the AWS
 * layer does that where the API model says "blob"); fr_base64_* is the project's one base64.
 *
 * Failures: json.decode raises a "json.decode" error object (it is what workflows call, and
 * every caller today expects it to raise); json.base64_decode returns nil and a "json.base64"
 * error object; misuse (a value that cannot be encoded) raises a message naming the path.
 *
 * Ownership: every json_t built here is owned by the function that built it and released
 * with json_decref before returning or raising.
 */
#include "flowrun.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define NULL_MT "flowrun.json.null"
#define ARRAY_MT "flowrun.json.array"
#define OBJECT_MT "flowrun.json.object"
#define MAX_DEPTH 1000

static const char null_key = 0;

static int null_tostring(lua_State *L)
{
    lua_pushliteral(L, "json.null");
    return 1;
}

static int box_gc(lua_State *L);

/* The metatables this unit uses; idempotent, so C callers need not load the module first. */
static void ensure_metatables(lua_State *L)
{
    if (luaL_newmetatable(L, "flowrun.json.box")) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, "flowrun.json.array")) {
        lua_pushliteral(L, "array");
        lua_setfield(L, -2, "__jsontype");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, "flowrun.json.object")) {
        lua_pushliteral(L, "object");
        lua_setfield(L, -2, "__jsontype");
    }
    lua_pop(L, 1);
}

void fr_json_push_null(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &null_key) == LUA_TUSERDATA)
        return;
    lua_pop(L, 1);
    lua_newuserdatauv(L, 0, 0);
    if (luaL_newmetatable(L, NULL_MT)) {
        lua_pushliteral(L, "json.null");
        lua_setfield(L, -2, "__name");
        lua_pushcfunction(L, null_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &null_key);
}

bool fr_json_isnull(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TUSERDATA)
        return false;
    idx = lua_absindex(L, idx);
    fr_json_push_null(L);
    bool is = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    return is;
}

/* ---- encoding ------------------------------------------------------------------------------ */
typedef struct {
    lua_State *L;
    char path[512];
    const char *err;
    char errbuf[640];
} enc_t;

static void set_err(enc_t *e, const char *what)
{
    snprintf(e->errbuf, sizeof e->errbuf, "json.encode: %s at $%s", what, e->path);
    e->err = e->errbuf;
}

/* "array", "object" or NULL from the table's metatable marker */
static const char *marker(lua_State *L, int idx)
{
    const char *m = NULL;
    if (lua_getmetatable(L, idx)) {
        if (lua_getfield(L, -1, "__jsontype") == LUA_TSTRING)
            m = lua_tostring(L, -1); /* interned literal kept alive by the metatable */
        lua_pop(L, 2);
    }
    return m;
}

static json_t *encode_value(enc_t *e, int idx, int depth);

/* Append ".key" or "[i]" to the path shown in errors; returns the length to cut back to. */
static size_t path_key(enc_t *e, const char *key)
{
    size_t len = strlen(e->path);
    snprintf(e->path + len, sizeof e->path - len, ".%s", key);
    return len;
}

static size_t path_index(enc_t *e, lua_Integer i)
{
    size_t len = strlen(e->path);
    snprintf(e->path + len, sizeof e->path - len, "[%lld]", (long long)i);
    return len;
}

static json_t *encode_table(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (depth > MAX_DEPTH) {
        set_err(e, "tables nested too deep (a cycle?)");
        return NULL;
    }
    luaL_checkstack(L, 4, "json.encode");
    const char *m = marker(L, idx);
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    bool is_array = m ? strcmp(m, "array") == 0 : false;
    if (!m && n > 0) {
        /* an array when its keys are exactly 1..n */
        lua_Integer count = 0;
        is_array = true;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            count++;
            if (!lua_isinteger(L, -1)) {
                is_array = false;
                lua_pop(L, 1);
                break;
            }
            lua_Integer k = lua_tointeger(L, -1);
            if (k < 1 || k > n) {
                is_array = false;
                lua_pop(L, 1);
                break;
            }
        }
        if (is_array && count != n)
            is_array = false;
    }
    if (is_array) {
        json_t *arr = json_array();
        for (lua_Integer i = 1; i <= n; i++) {
            size_t mark = path_index(e, i - 1);
            lua_rawgeti(L, idx, i);
            json_t *v = encode_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            e->path[mark] = 0;
            if (!v) {
                json_decref(arr);
                return NULL;
            }
            json_array_append_new(arr, v);
        }
        return arr;
    }
    json_t *obj = json_object();
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        char numkey[64];
        const char *key;
        if (lua_type(L, -2) == LUA_TSTRING) {
            key = lua_tostring(L, -2);
        } else if (lua_isinteger(L, -2)) {
            snprintf(numkey, sizeof numkey, "%lld", (long long)lua_tointeger(L, -2));
            key = numkey;
        } else if (lua_type(L, -2) == LUA_TNUMBER) {
            snprintf(numkey, sizeof numkey, "%.17g", lua_tonumber(L, -2));
            key = numkey;
        } else {
            set_err(e, lua_pushfstring(L, "a %s key cannot be a JSON object key",
                                       luaL_typename(L, -2)));
            lua_pop(L, 3);
            json_decref(obj);
            return NULL;
        }
        size_t mark = path_key(e, key);
        json_t *v = encode_value(e, lua_gettop(L), depth + 1);
        e->path[mark] = 0;
        lua_pop(L, 1);
        if (!v) {
            lua_pop(L, 1);
            json_decref(obj);
            return NULL;
        }
        if (json_object_set_new(obj, key, v) != 0) {
            set_err(e, "a key that is not valid UTF-8");
            lua_pop(L, 1);
            json_decref(obj);
            return NULL;
        }
    }
    return obj;
}

static json_t *encode_value(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return json_null();
    case LUA_TBOOLEAN:
        return json_boolean(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return json_integer((json_int_t)lua_tointeger(L, idx));
        else {
            double d = lua_tonumber(L, idx);
            if (!isfinite(d)) {
                set_err(e, "NaN or infinity (JSON has no such number)");
                return NULL;
            }
            return json_real(d);
        }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        json_t *v = json_stringn(s, len);
        if (!v)
            set_err(e, "a string that is not valid UTF-8 (encode binary data with "
                       "json.base64_encode)");
        return v;
    }
    case LUA_TTABLE:
        return encode_table(e, idx, depth);
    case LUA_TUSERDATA:
        if (fr_json_isnull(L, idx))
            return json_null();
        /* fall through */
    default:
        set_err(e, lua_pushfstring(L, "a %s value cannot be encoded", luaL_typename(L, idx)));
        lua_pop(L, 1);
        return NULL;
    }
}

void fr_json_encode(lua_State *L, int idx, bool pretty)
{
    enc_t e = {.L = L};
    idx = lua_absindex(L, idx);
    json_t *root = encode_value(&e, idx, 0);
    if (!root)
        luaL_error(L, "%s", e.err);
    size_t flags = JSON_ENCODE_ANY | JSON_SORT_KEYS | JSON_REAL_PRECISION(17);
    flags |= pretty ? JSON_INDENT(2) : JSON_COMPACT;
    char *s = json_dumps(root, flags);
    json_decref(root);
    if (!s)
        luaL_error(L, "json.encode: out of memory");
    lua_pushstring(L, s);
    free(s);
}

/* ---- decoding ------------------------------------------------------------------------------ */
static void push_marked(lua_State *L, const char *mt)
{
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
}

static void push_json(lua_State *L, json_t *v)
{
    luaL_checkstack(L, 3, "json.decode: nested too deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        json_t *item;
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_foreach(v, key, item)
        {
            push_json(L, item);
            lua_setfield(L, -2, key);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i, n = json_array_size(v);
        lua_createtable(L, (int)n, 0);
        for (i = 0; i < n; i++) {
            push_json(L, json_array_get(v, i));
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        if (n == 0)
            push_marked(L, ARRAY_MT);
        break;
    }
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
        fr_json_push_null(L);
        break;
    }
}

bool fr_json_decode(lua_State *L, const char *s, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!root) {
        lua_pushfstring(L, "invalid JSON at line %d, column %d: %s", err.line, err.column,
                        err.text);
        return false;
    }
    /* push_json may raise (out of memory, too deep): keep root owned by a to-be-freed box */
    ensure_metatables(L);
    json_t **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = root;
    luaL_setmetatable(L, "flowrun.json.box");
    push_json(L, root);
    lua_remove(L, -2); /* the box: its __gc releases root */
    return true;
}

static int box_gc(lua_State *L)
{
    json_t **box = lua_touserdata(L, 1);
    if (*box) {
        json_decref(*box);
        *box = NULL;
    }
    return 0;
}

/* ---- the Lua module ---------------------------------------------------------------------------
 */

/* json.encode(value [, {pretty = true}]) -> string; raises naming the path of what cannot be
 * encoded. */
static int l_encode(lua_State *L)
{
    bool pretty = false;
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_getfield(L, 2, "pretty");
        pretty = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    fr_json_encode(L, 1, pretty);
    return 1;
}

/* json.decode(string) -> value; raises error object code "json.decode" on bad input. */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (!fr_json_decode(L, s, len)) {
        const char *msg = lua_tostring(L, -1);
        fr_error_push(L, "json.decode", msg, false);
        return lua_error(L);
    }
    return 1;
}

static int mark(lua_State *L, const char *mt)
{
    ensure_metatables(L);
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    push_marked(L, mt);
    return 1;
}

/* json.array([t]) / json.object([t]): mark t (or a new table) as a JSON array / object */
static int l_array(lua_State *L)
{
    return mark(L, ARRAY_MT);
}

static int l_object(lua_State *L)
{
    return mark(L, OBJECT_MT);
}

static int l_is_array(lua_State *L)
{
    const char *m = lua_type(L, 1) == LUA_TTABLE ? marker(L, 1) : NULL;
    lua_pushboolean(L, m && strcmp(m, "array") == 0);
    return 1;
}

/* ---- base64 (RFC 4648, standard alphabet, padded): the one implementation ------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t fr_base64_encode(const void *in, size_t n, char *out)
{
    const unsigned char *s = in;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        out[o++] = b64chars[(v >> 18) & 63];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64chars[v & 63] : '=';
    }
    return o;
}

static int b64value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static bool b64space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool fr_base64_decode(const char *in, size_t n, void *outp, size_t *outlen, char *why,
                      size_t whylen)
{
    unsigned char *out = outp;
    size_t o = 0, sig = 0, pad = 0;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (b64space(c)) /* line-wrapped text (MIME, PEM) decodes as one */
            continue;
        int d = b64value(c);
        if (c == '=') {
            /* padding fills the third and fourth places of the last group only */
            if (sig % 4 < 2) {
                snprintf(why, whylen, "invalid base64: '=' at offset %zu", i);
                return false;
            }
            pad++;
            sig++;
            continue;
        }
        if (d < 0 || pad) {
            if (d < 0)
                snprintf(why, whylen, "invalid base64: byte 0x%02x at offset %zu", c, i);
            else
                snprintf(why, whylen, "invalid base64: data after the padding at offset %zu", i);
            return false;
        }
        v = v << 6 | (unsigned)d;
        if (++sig % 4 == 0) {
            out[o++] = (unsigned char)(v >> 16);
            out[o++] = (unsigned char)(v >> 8);
            out[o++] = (unsigned char)v;
            v = 0;
        }
    }
    if (sig % 4 != 0) {
        snprintf(why, whylen, "invalid base64: length is not a multiple of 4");
        return false;
    }
    if (pad) { /* the last group: 2 or 3 characters of data */
        v <<= 6 * pad;
        out[o++] = (unsigned char)(v >> 16);
        if (pad == 1)
            out[o++] = (unsigned char)(v >> 8);
    }
    *outlen = o;
    return true;
}

/* json.base64_encode(bytes) -> string (standard alphabet, padded). */
static int l_b64encode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    if (len > (SIZE_MAX - 3) / 4 * 3)
        return luaL_error(L, "json.base64_encode: input too large");
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, 4 * ((len + 2) / 3));
    luaL_pushresultsize(&b, fr_base64_encode(s, len, out));
    return 1;
}

/* json.base64_decode(s) -> bytes, or nil and a "json.base64" error object saying what is
 * malformed and where. ASCII whitespace is skipped (line-wrapped text); padding is required. */
static int l_b64decode(lua_State *L)
{
    size_t len, outlen;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, len / 4 * 3 + 3);
    char why[96];
    if (!fr_base64_decode(s, len, out, &outlen, why, sizeof why)) {
        fr_error_push(L, "json.base64", why, false);
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    luaL_pushresultsize(&b, outlen);
    return 1;
}

static int luaopen_json(lua_State *L)
{
    static const luaL_Reg f[] = {{"encode", l_encode},
                                 {"decode", l_decode},
                                 {"array", l_array},
                                 {"object", l_object},
                                 {"is_array", l_is_array},
                                 {"base64_encode", l_b64encode},
                                 {"base64_decode", l_b64decode},
                                 {NULL, NULL}};
    ensure_metatables(L);
    luaL_newlib(L, f);
    fr_json_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}

FR_MODULE("json", luaopen_json)
