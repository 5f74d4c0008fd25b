/*
 * zlib.c — gzip streams with zlib (pure: no loop), module "zlib". zlib is in the process anyway
 * (libcurl links it); this replaces decompressing in Lua.
 *
 *   zlib.gunzip(s [, max_bytes]) -> string | nil, err
 *     Every member of a gzip file, concatenated (what gzip -d writes). Corrupt, truncated or
 *     trailing data gives nil and a "zlib.data" error object; output beyond max_bytes (default
 *     256 MiB, so that a small bomb cannot take the memory) gives nil and "zlib.too_large".
 *   zlib.gzip(s [, level]) -> string: one gzip member (level 0-9, default 6).
 *   Misuse (not a string, a bad level or max_bytes) raises.
 *
 * Ownership: the z_stream lives in a userdata ("flowrun.zlib.stream") anchored on the Lua stack
 * while it works, so a Lua error (out of memory growing the result) leaves nothing behind: its
 * __gc ends the stream.
 */
#include <string.h>

#include <zlib.h>

#include "flowrun.h"

#define STREAM_MT "flowrun.zlib.stream"
#define DEFAULT_MAX ((lua_Integer)256 << 20)
#define CHUNK 65536

typedef struct {
    z_stream z;
    bool inflating, deflating; /* which End is due */
} stream_t;

static void stream_end(stream_t *st)
{
    if (st->inflating)
        inflateEnd(&st->z);
    if (st->deflating)
        deflateEnd(&st->z);
    st->inflating = st->deflating = false;
}

static int l_stream_gc(lua_State *L)
{
    stream_end(luaL_checkudata(L, 1, STREAM_MT));
    return 0;
}

static stream_t *new_stream(lua_State *L)
{
    stream_t *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    luaL_setmetatable(L, STREAM_MT);
    return st;
}

static int fail(lua_State *L, stream_t *st, const char *code, const char *msg)
{
    stream_end(st);
    lua_pushnil(L);
    fr_error_push(L, code, msg, false);
    return 2;
}

/* zlib.gunzip(s [, max_bytes]) -> string | nil, err. Does not wait. */
static int l_gunzip(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer max = luaL_optinteger(L, 2, DEFAULT_MAX);
    luaL_argcheck(L, max >= 0, 2, "max_bytes must be >= 0");
    lua_settop(L, 2);
    stream_t *st = new_stream(L);                     /* 3 */
    if (inflateInit2(&st->z, 16 + MAX_WBITS) != Z_OK) /* 16: gzip framing only */
        return luaL_error(L, "zlib: out of memory");
    st->inflating = true;
    st->z.next_in = (Bytef *)s;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t total = 0, left = n;
    char msg[160];
    if (n == 0)
        return fail(L, st, "zlib.data", "not a gzip stream: no data");
    for (;;) {
        /* room for one byte beyond max_bytes: producing it is how the limit is seen */
        size_t room = (size_t)max - total + 1;
        if (room > CHUNK || room == 0)
            room = CHUNK;
        char *out = luaL_prepbuffsize(&b, room);
        uInt in_now = left > UINT_MAX ? UINT_MAX : (uInt)left;
        st->z.avail_in = in_now;
        st->z.next_out = (Bytef *)out;
        st->z.avail_out = (uInt)room;
        int rc = inflate(&st->z, Z_NO_FLUSH);
        size_t produced = room - st->z.avail_out;
        left -= in_now - st->z.avail_in;
        luaL_addsize(&b, produced);
        total += produced;
        if (total > (size_t)max) {
            snprintf(msg, sizeof msg, "gzip data inflates beyond %lld bytes (max_bytes)",
                     (long long)max);
            return fail(L, st, "zlib.too_large", msg);
        }
        if (rc == Z_STREAM_END) {
            if (left == 0)
                break;
            /* another member follows (gzip -c a b > ab.gz), or junk */
            const unsigned char *next = st->z.next_in;
            if (left < 2 || next[0] != 0x1f || next[1] != 0x8b) {
                snprintf(msg, sizeof msg, "%zu bytes of trailing data after the gzip stream", left);
                return fail(L, st, "zlib.data", msg);
            }
            inflateReset(&st->z);
            continue;
        }
        if (rc == Z_MEM_ERROR)
            return luaL_error(L, "zlib: out of memory");
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            snprintf(msg, sizeof msg, "corrupt gzip data: %s", st->z.msg ? st->z.msg : zError(rc));
            return fail(L, st, "zlib.data", msg);
        }
        if (left == 0 && produced < room) /* wants more input, and there is none */
            return fail(L, st, "zlib.data", "truncated gzip data: the stream ends early");
    }
    stream_end(st);
    luaL_pushresult(&b);
    return 1;
}

/* zlib.gzip(s [, level]) -> string. Does not wait. */
static int l_gzip(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer level = luaL_optinteger(L, 2, 6);
    luaL_argcheck(L, level >= 0 && level <= 9, 2, "level must be 0 .. 9");
    lua_settop(L, 2);
    stream_t *st = new_stream(L);
    if (deflateInit2(&st->z, (int)level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return luaL_error(L, "zlib: out of memory");
    st->deflating = true;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    st->z.next_in = (Bytef *)s;
    size_t left = n;
    int rc;
    do {
        uInt in_now = left > UINT_MAX ? UINT_MAX : (uInt)left;
        st->z.avail_in = in_now;
        char *out = luaL_prepbuffsize(&b, CHUNK);
        st->z.next_out = (Bytef *)out;
        st->z.avail_out = CHUNK;
        rc = deflate(&st->z, left == in_now ? Z_FINISH : Z_NO_FLUSH);
        left -= in_now - st->z.avail_in;
        luaL_addsize(&b, CHUNK - st->z.avail_out);
        if (rc == Z_STREAM_ERROR)
            return luaL_error(L, "zlib: deflate failed");
    } while (rc != Z_STREAM_END);
    stream_end(st);
    luaL_pushresult(&b);
    return 1;
}

static int luaopen_zlib(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__gc", l_stream_gc}, {"__close", l_stream_gc}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"gunzip", l_gunzip}, {"gzip", l_gzip}, {NULL, NULL}};
    if (luaL_newmetatable(L, STREAM_MT))
        luaL_setfuncs(L, meta, 0);
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}

FR_MODULE("zlib", luaopen_zlib)
