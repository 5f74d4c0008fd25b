/*
 * test_zlib.c — module "zlib" (runtime/zlib.c) linked directly: streams written by /bin/gzip
 * (one member and several), gzip -> gunzip round trips, and what must be refused: corrupt,
 * truncated and trailing data, and a bomb beyond max_bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "flowrun.h"
#include "tap.h"

static lua_CFunction find_module(const char *name)
{
    for (fr_module_t *m = fr_modules(); m; m = m->next)
        if (!strcmp(m->name, name))
            return m->open;
    return NULL;
}

/* The output of a shell command (gzip), read whole; returns its length in *n. */
static char *run(const char *cmd, size_t *n)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, p)) > 0) {
        len += got;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    pclose(p);
    *n = len;
    return buf;
}

/* Run a chunk with the module as `zlib` and extra string arguments; returns its string result
 * (or the error). */
static const char *check(lua_State *L, const char *code, const char *a, size_t al, const char *b,
                         size_t bl)
{
    lua_settop(L, 1);
    if (luaL_loadstring(L, code) != LUA_OK)
        return lua_tostring(L, -1);
    lua_pushvalue(L, 1);
    lua_pushlstring(L, a ? a : "", al);
    lua_pushlstring(L, b ? b : "", bl);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK)
        return lua_tostring(L, -1);
    return lua_tostring(L, -1);
}

int main(void)
{
    lua_CFunction open = find_module("zlib");
    if (!tap_ok(open != NULL, "module zlib registered"))
        return tap_done();
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);

    /* a text file, compressed by gzip(1), twice: one member, then two members back to back */
    char path[] = "/tmp/flowrun-zlib-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!tap_ok(f != NULL, "a temporary file"))
        return tap_done();
    for (int i = 0; i < 20000; i++)
        fprintf(f, "line %d of the EMR step's stderr\n", i);
    fclose(f);
    size_t plain_len, one_len, two_len;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cat %s", path);
    char *plain = run(cmd, &plain_len);
    snprintf(cmd, sizeof cmd, "/bin/gzip -c %s", path);
    char *one = run(cmd, &one_len);
    snprintf(cmd, sizeof cmd, "/bin/gzip -c %s; /bin/gzip -1 -c %s", path, path);
    char *two = run(cmd, &two_len);
    unlink(path);
    tap_ok(plain && one && two && one_len > 100 && two_len > one_len, "/bin/gzip wrote streams");

    const char *r = check(L,
                          "local zlib, gz, plain = ...\n"
                          "local out, err = zlib.gunzip(gz)\n"
                          "assert(out, tostring(err))\n"
                          "assert(out == plain, 'content differs: ' .. #out .. ' bytes')\n"
                          "return 'ok'",
                          one, one_len, plain, plain_len);
    tap_streq(r, "ok", "a stream from /bin/gzip decompresses to the file");
    lua_pushlstring(L, plain, plain_len);
    lua_pushvalue(L, -1);
    lua_concat(L, 2);
    size_t pp_len;
    const char *pp = lua_tolstring(L, -1, &pp_len);
    r = check(L,
              "local zlib, gz, plain2 = ...\n"
              "local out, err = zlib.gunzip(gz)\n"
              "assert(out, tostring(err))\n"
              "assert(out == plain2, 'two members: ' .. #out .. ' bytes')\n"
              "return 'ok'",
              two, two_len, pp, pp_len);
    tap_streq(r, "ok", "two members (gzip -c a; gzip -c a) decompress to both, in order");

    r = check(L,
              "local zlib, gz = ...\n"
              "local function refused(s, code, pattern, what)\n"
              "  local out, err = zlib.gunzip(s)\n"
              "  assert(out == nil, what .. ': accepted')\n"
              "  assert(getmetatable(err).__name == 'flowrun.error', what .. ': an error object')\n"
              "  assert(err.code == code, what .. ': ' .. tostring(err))\n"
              "  assert(err.message:find(pattern), what .. ': ' .. err.message)\n"
              "end\n"
              "refused(gz:sub(1, #gz // 2), 'zlib.data', 'truncated', 'cut in half')\n"
              "refused(gz:sub(1, #gz - 4), 'zlib.data', 'truncated', 'without the size')\n"
              "refused(gz:sub(1, 5), 'zlib.data', 'truncated', 'only a header')\n"
              "local bad = gz:sub(1, 30) .. string.char((gz:byte(31) + 1) % 256) .. gz:sub(32)\n"
              "local out, err = zlib.gunzip(bad)\n"
              "assert(out == nil and err.code == 'zlib.data', 'one byte changed: ' .. "
              "tostring(err))\n"
              "refused(gz:sub(1, -5) .. 'XXXX', 'zlib.data', 'corrupt', 'a wrong length')\n"
              "refused(gz .. 'junk', 'zlib.data', 'trailing data', 'junk after the stream')\n"
              "refused('not gzip at all', 'zlib.data', 'corrupt', 'not gzip')\n"
              "refused('', 'zlib.data', 'no data', 'empty')\n"
              "return 'ok'",
              one, one_len, NULL, 0);
    tap_streq(r, "ok", "corrupt, truncated, trailing and empty input: nil and zlib.data");

    r = check(
        L,
        "local zlib = ...\n"
        "local bomb = zlib.gzip(string.rep('\\0', 64 << 20), 9)\n"
        "assert(#bomb < 200000, 'a 64 MiB bomb in ' .. #bomb .. ' bytes')\n"
        "local out, err = zlib.gunzip(bomb, 1 << 20)\n"
        "assert(out == nil and err.code == 'zlib.too_large', tostring(err))\n"
        "assert(err.message:find('1048576'), err.message)\n"
        "assert(#zlib.gunzip(zlib.gzip(('x'):rep(1000)), 1000) == 1000, 'exactly max_bytes')\n"
        "out, err = zlib.gunzip(zlib.gzip(('x'):rep(1001)), 1000)\n"
        "assert(err and err.code == 'zlib.too_large', 'one byte beyond')\n"
        "out, err = zlib.gunzip(zlib.gzip(''), 0)\n"
        "assert(out == '', 'empty content, max_bytes 0: ' .. tostring(err))\n"
        "return 'ok'",
        NULL, 0, NULL, 0);
    tap_streq(r, "ok", "a bomb stops at max_bytes (zlib.too_large); the limit is exact");

    r = check(L,
              "local zlib = ...\n"
              "local all = {}\n"
              "for i = 0, 255 do all[#all + 1] = string.char(i) end\n"
              "all = table.concat(all):rep(300)\n"
              "for level = 0, 9 do\n"
              "  assert(zlib.gunzip(zlib.gzip(all, level)) == all, 'level ' .. level)\n"
              "end\n"
              "assert(zlib.gzip('x'):sub(1, 2) == '\\31\\139', 'gzip magic')\n"
              "assert(zlib.gunzip(zlib.gzip('')) == '', 'empty')\n"
              "assert(not pcall(zlib.gzip, 'x', 10), 'level 10 is misuse')\n"
              "assert(not pcall(zlib.gunzip, {}), 'a table is misuse')\n"
              "assert(not pcall(zlib.gunzip, 'x', -1), 'negative max_bytes is misuse')\n"
              "return 'ok'",
              NULL, 0, NULL, 0);
    tap_streq(r, "ok", "gzip -> gunzip round trips at every level; misuse raises");

    lua_settop(L, 1);
    r = check(L,
              "local zlib, path = ...\n"
              "local f = assert(io.open(path, 'wb'))\n"
              "f:write(zlib.gzip('written by flowrun\\n')); f:close()\n"
              "local p = io.popen('/bin/gzip -dc ' .. path)\n"
              "local out = p:read('a'); p:close()\n"
              "os.remove(path)\n"
              "return out == 'written by flowrun\\n' and 'ok' or out",
              path, strlen(path), NULL, 0);
    tap_streq(r, "ok", "what zlib.gzip writes, /bin/gzip reads");
    free(plain);
    free(one);
    free(two);
    lua_close(L);
    return tap_done();
}
