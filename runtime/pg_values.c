/*
 * pg_values.c — PostgreSQL values <-> Lua values (pure: no loop, no libpq connection, nothing
 * but type OIDs, bytes and the Lua stack), for pg.c.
 *
 * Results come in PostgreSQL's text form (flowrun never asks for binary results): int2/int4/
 * int8/oid -> Lua integers (exact), float4/float8 -> numbers, numeric -> exact strings (or
 * numbers with FR_PG_NUMERIC_NUMBER), bool -> booleans, json/jsonb -> tables, bytea -> the
 * binary string, timestamp/timestamptz -> ISO 8601 ("2024-01-02T03:04:05+01:00"), arrays of
 * these -> Lua arrays (nested for several dimensions, NULL elements json.null); everything else
 * -> its text. Decoding trusts nothing: text that does not have the shape its type's output
 * has (an integer out of range, a truncated array, a date in another style) comes back as the
 * string it is, never as a wrong value.
 *
 * Parameters go in text form, except pg.bytea(s) values, sent in binary as bytea, and strings
 * that are not valid text (not UTF-8, or with a NUL byte), sent in binary with no type: those
 * may only reach a parameter the server says is bytea, which pg.c checks before executing.
 *
 * Ownership: strings are Lua's (anchored on the stack by the caller); the parameter arrays
 * live in a userdata the caller keeps on its stack.
 */
#include "pg_values.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ARRAY_MAX_DEPTH 64 /* PostgreSQL's own limit is 6 dimensions */

static const char bytea_key = 0; /* registry: metatable marking pg.bytea(s) values */

static const struct typeinfo {
    Oid oid;
    const char *name;
    Oid elem; /* for arrays */
} types[] = {
    {16, "bool", 0},
    {17, "bytea", 0},
    {18, "char", 0},
    {19, "name", 0},
    {20, "int8", 0},
    {21, "int2", 0},
    {23, "int4", 0},
    {25, "text", 0},
    {26, "oid", 0},
    {114, "json", 0},
    {142, "xml", 0},
    {650, "cidr", 0},
    {700, "float4", 0},
    {701, "float8", 0},
    {705, "unknown", 0},
    {790, "money", 0},
    {869, "inet", 0},
    {1042, "bpchar", 0},
    {1043, "varchar", 0},
    {1082, "date", 0},
    {1083, "time", 0},
    {1114, "timestamp", 0},
    {1184, "timestamptz", 0},
    {1186, "interval", 0},
    {1266, "timetz", 0},
    {1700, "numeric", 0},
    {2278, "void", 0},
    {2950, "uuid", 0},
    {3802, "jsonb", 0},
    {1000, "bool[]", 16},
    {1001, "bytea[]", 17},
    {1002, "char[]", 18},
    {1003, "name[]", 19},
    {1005, "int2[]", 21},
    {1007, "int4[]", 23},
    {1009, "text[]", 25},
    {1014, "bpchar[]", 1042},
    {1015, "varchar[]", 1043},
    {1016, "int8[]", 20},
    {1021, "float4[]", 700},
    {1022, "float8[]", 701},
    {1028, "oid[]", 26},
    {1115, "timestamp[]", 1114},
    {1182, "date[]", 1082},
    {1183, "time[]", 1083},
    {1185, "timestamptz[]", 1184},
    {1187, "interval[]", 1186},
    {1231, "numeric[]", 1700},
    {1270, "timetz[]", 1266},
    {2951, "uuid[]", 2950},
    {199, "json[]", 114},
    {3807, "jsonb[]", 3802},
    {791, "money[]", 790},
    {1041, "inet[]", 869},
    {651, "cidr[]", 650},
    {143, "xml[]", 142},
};

static const struct typeinfo *type_of(Oid oid)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].oid == oid)
            return &types[i];
    return NULL;
}

const char *fr_pg_type_name(Oid oid)
{
    const struct typeinfo *ti = type_of(oid);
    return ti ? ti->name : NULL;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- text -> Lua ---------------------------------------------------------------------------- */

size_t fr_pg_unescape_bytea(const char *s, size_t len, char *out)
{
    size_t n = 0;
    if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
        /* hex; anything that is not a hex pair (whitespace) is skipped, as libpq does */
        for (size_t i = 2; i < len;) {
            int hi = fr_hexval((unsigned char)s[i++]);
            if (hi < 0 || i >= len)
                continue;
            int lo = fr_hexval((unsigned char)s[i++]);
            if (lo >= 0)
                out[n++] = (char)(hi << 4 | lo);
        }
        return n;
    }
    /* escape format (bytea_output = escape): \\ is a backslash, \ooo an octal byte; a backslash
     * before anything else is dropped and what follows is taken as it is */
    for (size_t i = 0; i < len;) {
        if (s[i] != '\\') {
            out[n++] = s[i++];
            continue;
        }
        i++;
        if (i < len && s[i] == '\\') {
            out[n++] = s[i++];
        } else if (i + 2 < len && s[i] >= '0' && s[i] <= '3' && s[i + 1] >= '0' &&
                   s[i + 1] <= '7' && s[i + 2] >= '0' && s[i + 2] <= '7') {
            out[n++] = (char)((s[i] - '0') << 6 | (s[i + 1] - '0') << 3 | (s[i + 2] - '0'));
            i += 3;
        }
    }
    return n;
}

static void push_bytea(lua_State *L, const char *s, size_t len)
{
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, len);
    luaL_pushresultsize(&b, fr_pg_unescape_bytea(s, len, out));
}

/* Is s[i..j) all digits, at least min of them? */
static bool digits(const char *s, size_t i, size_t j, size_t min)
{
    if (j - i < min)
        return false;
    for (; i < j; i++)
        if (!is_digit(s[i]))
            return false;
    return true;
}

/* "2024-01-02 03:04:05.5+01" -> "2024-01-02T03:04:05.5+01:00". Only PostgreSQL's ISO output
 * (DateStyle ISO, which pg.c sets) is rewritten: YYYY-MM-DD hh:mm:ss[.f][±hh[:mm[:ss]]] with a
 * year of four digits or more; BC dates, infinity and other styles stay as they are. */
static void push_timestamp(lua_State *L, const char *s, size_t len, bool tz)
{
    char buf[64];
    size_t y = 0;
    while (y < len && is_digit(s[y]))
        y++;
    size_t i = y; /* s[i] should be the '-' after the year */
    bool ok = y >= 4 && len < sizeof buf - 3 && i + 15 <= len && s[i] == '-' &&
              digits(s, i + 1, i + 3, 2) && s[i + 3] == '-' && digits(s, i + 4, i + 6, 2) &&
              s[i + 6] == ' ' && digits(s, i + 7, i + 9, 2) && s[i + 9] == ':' &&
              digits(s, i + 10, i + 12, 2) && s[i + 12] == ':' && digits(s, i + 13, i + 15, 2);
    size_t p = i + 15, zone = 0, zone_len = 0;
    if (ok && p < len && s[p] == '.') {
        size_t f = ++p;
        while (p < len && is_digit(s[p]))
            p++;
        ok = p > f;
    }
    if (ok && tz && p < len && (s[p] == '+' || s[p] == '-')) {
        zone = p++;
        ok = p + 2 <= len && digits(s, p, p + 2, 2);
        p += 2;
        for (int part = 0; ok && part < 2 && p < len; part++) {
            ok = s[p] == ':' && p + 3 <= len && digits(s, p + 1, p + 3, 2);
            p += 3;
        }
        zone_len = p - zone;
    }
    if (!ok || p != len) {
        lua_pushlstring(L, s, len);
        return;
    }
    memcpy(buf, s, len);
    buf[i + 6] = 'T';
    size_t n = len;
    if (zone && zone_len == 3) { /* "+01" -> "+01:00" */
        memcpy(buf + n, ":00", 3);
        n += 3;
    }
    lua_pushlstring(L, buf, n);
}

/* A decimal integer that fits a Lua integer (int64), optional sign, nothing else. */
static bool parse_int(const char *s, size_t len, lua_Integer *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == len)
        return false;
    lua_Unsigned v = 0, limit = neg ? (lua_Unsigned)LUA_MAXINTEGER + 1 : LUA_MAXINTEGER;
    for (; i < len; i++) {
        if (!is_digit(s[i]))
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10)
            return false; /* out of range: the caller keeps the text, never a wrapped value */
        v = v * 10 + d;
    }
    *out = neg ? (lua_Integer)(0 - v) : (lua_Integer)v;
    return true;
}

/* A float in PostgreSQL's output (digits, exponent, NaN, Infinity), nothing else. */
static bool parse_float(const char *s, size_t len, double *out)
{
    char buf[400];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = 0;
    /* strtod also takes hex floats and leading white space (any of it), which PostgreSQL
     * never writes */
    if (!strchr("+-.0123456789IiNn", buf[0]) || memchr(buf, 'x', len) || memchr(buf, 'X', len))
        return false;
    char *end;
    *out = strtod(buf, &end);
    return end == buf + len;
}

static void push_value(lua_State *L, Oid oid, const char *s, size_t len, int flags);

/* One level of an array's text form at s[*pos] == '{': pushes a table and returns true, or
 * returns false (what it pushed is left for the caller to drop) when the text is not an array
 * PostgreSQL would write. */
static bool parse_array(lua_State *L, const char *s, size_t len, size_t *pos, Oid elem, int flags,
                        int depth)
{
    if (depth > ARRAY_MAX_DEPTH)
        return false;
    luaL_checkstack(L, 4, "pg: array nested too deep");
    size_t i = *pos + 1; /* past '{' */
    lua_newtable(L);
    if (i < len && s[i] == '}') {
        *pos = i + 1;
        return true;
    }
    for (lua_Integer n = 1;; n++) {
        if (i >= len)
            return false;
        if (s[i] == '{') {
            if (!parse_array(L, s, len, &i, elem, flags, depth + 1))
                return false;
        } else if (s[i] == '"') {
            /* find the closing quote first: the element's bytes are then copied unescaped */
            size_t j = ++i, esc = 0;
            while (j < len && s[j] != '"') {
                if (s[j] == '\\') {
                    j++;
                    esc++;
                }
                j++;
            }
            if (j >= len)
                return false;
            luaL_Buffer b;
            char *out = luaL_buffinitsize(L, &b, j - i - esc);
            size_t o = 0;
            for (; i < j; i++) {
                if (s[i] == '\\')
                    i++;
                out[o++] = s[i];
            }
            luaL_pushresultsize(&b, o);
            i = j + 1;
            size_t l;
            const char *e = lua_tolstring(L, -1, &l);
            push_value(L, elem, e, l, flags);
            lua_remove(L, -2);
        } else {
            size_t st = i;
            while (i < len && s[i] != ',' && s[i] != '}') {
                /* PostgreSQL quotes an element holding any of these */
                if (strchr("\"{\\ \t\n\r\v\f", s[i]))
                    return false;
                i++;
            }
            size_t l = i - st;
            if (l == 0)
                return false;
            if (l == 4 && strncasecmp(s + st, "NULL", 4) == 0)
                fr_json_push_null(L);
            else
                push_value(L, elem, s + st, l, flags);
        }
        lua_rawseti(L, -2, n);
        if (i < len && s[i] == ',') {
            i++;
        } else if (i < len && s[i] == '}') {
            *pos = i + 1;
            return true;
        } else {
            return false;
        }
    }
}

/* "{...}" or "[lo:hi][lo:hi]={...}" (explicit bounds: the elements are still in order). */
static void push_array(lua_State *L, const char *s, size_t len, Oid elem, int flags)
{
    size_t pos = 0;
    bool bounded = false;
    while (pos < len && s[pos] == '[') { /* [-3:4] */
        size_t i = pos + 1;
        if (i < len && s[i] == '-')
            i++;
        size_t d = i;
        while (i < len && is_digit(s[i]))
            i++;
        if (i == d || i >= len || s[i] != ':')
            break;
        if (++i < len && s[i] == '-')
            i++;
        d = i;
        while (i < len && is_digit(s[i]))
            i++;
        if (i == d || i >= len || s[i] != ']')
            break;
        pos = i + 1;
        if (pos < len && s[pos] == '=') {
            pos++;
            bounded = true;
            break;
        }
    }
    int top = lua_gettop(L);
    if ((pos == 0 || bounded) && pos < len && s[pos] == '{' &&
        parse_array(L, s, len, &pos, elem, flags, 0) && pos == len)
        return;
    lua_settop(L, top);
    lua_pushlstring(L, s, len);
}

static void push_value(lua_State *L, Oid oid, const char *s, size_t len, int flags)
{
    lua_Integer iv;
    double d;
    switch (oid) {
    case FR_OID_BOOL:
        if (len == 1 && (s[0] == 't' || s[0] == 'f'))
            lua_pushboolean(L, s[0] == 't');
        else
            lua_pushlstring(L, s, len);
        return;
    case FR_OID_INT2:
    case FR_OID_INT4:
    case FR_OID_INT8:
    case FR_OID_OID:
        if (parse_int(s, len, &iv))
            lua_pushinteger(L, iv);
        else
            lua_pushlstring(L, s, len);
        return;
    case FR_OID_FLOAT4:
    case FR_OID_FLOAT8:
        if (parse_float(s, len, &d))
            lua_pushnumber(L, d);
        else
            lua_pushlstring(L, s, len);
        return;
    case FR_OID_NUMERIC:
        if (!(flags & FR_PG_NUMERIC_NUMBER))
            lua_pushlstring(L, s, len);
        else if (parse_int(s, len, &iv))
            lua_pushinteger(L, iv);
        else if (parse_float(s, len, &d)) /* NaN and Infinity too */
            lua_pushnumber(L, d);
        else
            lua_pushlstring(L, s, len);
        return;
    case FR_OID_JSON:
    case FR_OID_JSONB:
        if (!fr_json_decode(L, s, len)) {
            lua_pop(L, 1);
            lua_pushlstring(L, s, len);
        }
        return;
    case FR_OID_BYTEA:
        push_bytea(L, s, len);
        return;
    case FR_OID_TIMESTAMP:
        push_timestamp(L, s, len, false);
        return;
    case FR_OID_TIMESTAMPTZ:
        push_timestamp(L, s, len, true);
        return;
    default: {
        const struct typeinfo *ti = type_of(oid);
        if (ti && ti->elem && len > 0 && (s[0] == '{' || s[0] == '['))
            push_array(L, s, len, ti->elem, flags);
        else
            lua_pushlstring(L, s, len);
    }
    }
}

void fr_pg_push_text(lua_State *L, Oid oid, const char *s, size_t len, int flags)
{
    push_value(L, oid, s, len, flags);
}

/* ---- Lua -> parameters ------------------------------------------------------------------------
 */

size_t fr_pg_text_invalid_at(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char ch = s[i];
        if (ch == 0)
            return i;
        if (ch < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned int cp;
        if ((ch & 0xe0) == 0xc0) {
            k = 1;
            cp = ch & 0x1f;
        } else if ((ch & 0xf0) == 0xe0) {
            k = 2;
            cp = ch & 0x0f;
        } else if ((ch & 0xf8) == 0xf0) {
            k = 3;
            cp = ch & 0x07;
        } else {
            return i;
        }
        if (n - i <= k)
            return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += k + 1;
    }
    return n;
}

void fr_pg_push_bytea_mt(lua_State *L)
{
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &bytea_key) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &bytea_key);
}

static bool is_bytea(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return false;
    fr_pg_push_bytea_mt(L);
    bool is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

void fr_pg_params_build(lua_State *L, int first, int n, fr_pg_params_t *p)
{
    p->n = n;
    if (n == 0) {
        p->vals = NULL;
        p->lens = p->fmts = NULL;
        p->types = NULL;
        return;
    }
    if (n > 65535)
        luaL_error(L, "too many query parameters (%d, at most 65535)", n);
    size_t sz = (size_t)n * (sizeof(char *) + 2 * sizeof(int) + sizeof(Oid));
    char *mem = lua_newuserdatauv(L, sz, 0);
    p->vals = (const char **)mem;
    p->lens = (int *)(mem + (size_t)n * sizeof(char *));
    p->fmts = p->lens + n;
    p->types = (Oid *)(p->fmts + n);
    for (int i = 0; i < n; i++) {
        int idx = first + i;
        p->vals[i] = NULL;
        p->lens[i] = 0;
        p->fmts[i] = 0;
        p->types[i] = 0;
        int t = lua_type(L, idx);
        if (t == LUA_TNIL || fr_json_isnull(L, idx))
            continue;
        switch (t) {
        case LUA_TBOOLEAN:
            p->vals[i] = lua_toboolean(L, idx) ? "t" : "f";
            p->lens[i] = 1;
            p->types[i] = FR_OID_BOOL;
            continue;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) {
                lua_pushfstring(L, "%I", (lua_Integer)lua_tointeger(L, idx));
            } else {
                double d = lua_tonumber(L, idx);
                char buf[40];
                if (isnan(d))
                    strcpy(buf, "NaN");
                else if (isinf(d))
                    strcpy(buf, d > 0 ? "Infinity" : "-Infinity");
                else
                    snprintf(buf, sizeof buf, "%.17g", d);
                lua_pushstring(L, buf);
            }
            lua_replace(L, idx);
            break;
        case LUA_TSTRING:
            break;
        case LUA_TTABLE:
            if (is_bytea(L, idx)) {
                lua_rawgeti(L, idx, 1);
                if (lua_type(L, -1) != LUA_TSTRING)
                    luaL_error(L, "query parameter $%d: pg.bytea value without a string", i + 1);
                lua_replace(L, idx);
                size_t l;
                p->vals[i] = lua_tolstring(L, idx, &l);
                if (l > 0x7fffffff)
                    luaL_error(L, "query parameter $%d is too large", i + 1);
                p->lens[i] = (int)l;
                p->fmts[i] = 1;
                p->types[i] = FR_OID_BYTEA;
                continue;
            }
            fr_json_encode(L, idx, false);
            lua_replace(L, idx);
            break;
        default:
            luaL_error(L,
                       "query parameter $%d: cannot send a %s (expected nil, pg.null, boolean, "
                       "number, string or table)",
                       i + 1, luaL_typename(L, idx));
        }
        size_t l;
        const char *s = lua_tolstring(L, idx, &l);
        if (l > 0x7fffffff)
            luaL_error(L, "query parameter $%d is too large", i + 1);
        p->vals[i] = s;
        p->lens[i] = (int)l;
        if (t == LUA_TSTRING && fr_pg_text_invalid_at(s, l) < l) {
            /* not text PostgreSQL can hold: only a bytea parameter may take these bytes, sent
             * as they are; the type is left for the server to say (pg.c asks it) */
            p->fmts[i] = 1;
            p->types[i] = 0;
        }
    }
}
