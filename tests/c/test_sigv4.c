/*
 * test_sigv4.c — runs every case of the AWS SigV4 test suite (shared/testdata/sigv4) through
 * the "aws.sigv4" module, header signing and query (presigned) signing: canonical request,
 * string to sign and signature must match byte for byte. The vectors are read at run time from
 * $FLOWRUN_TESTDATA, shared/testdata in $FLOWRUN_ROOT, the current directory or any of their
 * parents, or relative to this binary (build/tests/ -> ../../../shared/testdata).
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <lualib.h>

#include "flowrun.h"
#include "tap.h"

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    size_t got = fread(p, 1, (size_t)n, f);
    fclose(f);
    p[got] = 0;
    if (len)
        *len = got;
    return p;
}

static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static const char *find_vectors(const char *argv0, char *buf, size_t n)
{
    const char *e = getenv("FLOWRUN_TESTDATA");
    if (e) {
        snprintf(buf, n, "%s/sigv4", e);
        if (is_dir(buf))
            return buf;
    }
    /* shared/ sits beside the checkout, which may be a worktree some levels further down
     * (/work/main, /work/wt/<branch>): look in every parent */
    const char *starts[] = {getenv("FLOWRUN_ROOT"), "."};
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        char dir[PATH_MAX];
        if (!starts[k] || !realpath(starts[k], dir) || strlen(dir) + 24 > n)
            continue;
        for (;;) {
            snprintf(buf, n, "%.*s/shared/testdata/sigv4", (int)(n - 24), dir);
            if (is_dir(buf))
                return buf;
            char *slash = strrchr(dir, '/');
            if (!slash || slash == dir)
                break;
            *slash = 0;
        }
    }
    char self[PATH_MAX / 2];
    snprintf(self, sizeof self, "%s", argv0);
    char *slash = strrchr(self, '/');
    if (slash) {
        *slash = 0;
        snprintf(buf, n, "%s/../../../shared/testdata/sigv4", self);
        if (is_dir(buf))
            return buf;
    }
    return NULL;
}

static lua_CFunction find_module(const char *name)
{
    for (fr_module_t *m = fr_modules(); m; m = m->next)
        if (!strcmp(m->name, name))
            return m->open;
    return NULL;
}

/* Push req.headers as an array of {name, value} pairs parsed from request.txt; sets method,
 * path, query and body on the req table at index t. */
static void push_request(lua_State *L, int t, char *raw)
{
    char *line_end = strchr(raw, '\n');
    *line_end = 0;
    char method[16], uri[4096];
    sscanf(raw, "%15s %4095s", method, uri);
    /* the URI may hold a space ("/example space/"): take what lies between the first space and
     * the last " HTTP/" */
    char *sp = strchr(raw, ' ');
    char *http = strstr(raw, " HTTP/");
    size_t ul = (size_t)(http - sp - 1);
    memcpy(uri, sp + 1, ul);
    uri[ul] = 0;
    lua_pushstring(L, method);
    lua_setfield(L, t, "method");
    char *q = strchr(uri, '?');
    if (q) {
        *q = 0;
        lua_pushstring(L, q + 1);
        lua_setfield(L, t, "query");
    }
    lua_pushstring(L, uri);
    lua_setfield(L, t, "path");

    lua_newtable(L);
    int n = 0;
    char *p = line_end + 1;
    while (*p && *p != '\n') {
        char *e = strchr(p, '\n');
        if (e)
            *e = 0;
        if ((*p == ' ' || *p == '\t') && n > 0) {
            /* continuation of the previous header's value */
            lua_rawgeti(L, -1, n);
            lua_rawgeti(L, -1, 2);
            lua_pushstring(L, "\n");
            lua_pushstring(L, p);
            lua_concat(L, 3);
            lua_rawseti(L, -2, 2);
            lua_pop(L, 1);
        } else {
            char *colon = strchr(p, ':');
            lua_createtable(L, 2, 0);
            lua_pushlstring(L, p, (size_t)(colon - p));
            lua_rawseti(L, -2, 1);
            lua_pushstring(L, colon + 1);
            lua_rawseti(L, -2, 2);
            lua_rawseti(L, -2, ++n);
        }
        if (!e) {
            p += strlen(p);
            break;
        }
        p = e + 1;
    }
    lua_setfield(L, t, "headers");
    if (*p == '\n') {
        lua_pushstring(L, p + 1);
        lua_setfield(L, t, "body");
    }
}

static int run_case(lua_State *L, const char *dir, const char *name, int query_mode)
{
    char cdir[PATH_MAX + 512];
    snprintf(cdir, sizeof cdir, "%s/%s", dir, name);
    char *ctx = slurp(cdir, "context.json", NULL);
    char *req = slurp(cdir, "request.txt", NULL);
    const char *pre = query_mode ? "query" : "header";
    char fn[64];
    snprintf(fn, sizeof fn, "%s-canonical-request.txt", pre);
    char *want_cr = slurp(cdir, fn, NULL);
    snprintf(fn, sizeof fn, "%s-string-to-sign.txt", pre);
    char *want_sts = slurp(cdir, fn, NULL);
    snprintf(fn, sizeof fn, "%s-signature.txt", pre);
    char *want_sig = slurp(cdir, fn, NULL);
    char msg[256];
    if (!ctx || !req || !want_cr || !want_sts || !want_sig) {
        snprintf(msg, sizeof msg, "%s (%s): vector files readable", name, pre);
        tap_ok(0, msg);
        return 0;
    }
    chomp(want_cr);
    chomp(want_sts);
    chomp(want_sig);
    json_error_t jerr;
    json_t *j = json_loads(ctx, 0, &jerr);
    json_t *cred = json_object_get(j, "credentials");

    int top = lua_gettop(L);
    lua_getfield(L, 1, "new");
    lua_newtable(L);
    lua_pushstring(L, json_string_value(json_object_get(cred, "access_key_id")));
    lua_setfield(L, -2, "access_key");
    lua_pushstring(L, json_string_value(json_object_get(cred, "secret_access_key")));
    lua_setfield(L, -2, "secret_key");
    if (json_object_get(cred, "token")) {
        lua_pushstring(L, json_string_value(json_object_get(cred, "token")));
        lua_setfield(L, -2, "token");
    }
    lua_call(L, 1, 1);
    int signer = lua_gettop(L);
    lua_newtable(L);
    int t = lua_gettop(L);
    push_request(L, t, req);
    const char *ts = json_string_value(json_object_get(j, "timestamp")); /* 2015-08-30T12:36:00Z */
    char amz[17];
    snprintf(amz, sizeof amz, "%.4s%.2s%.2sT%.2s%.2s%.2sZ", ts, ts + 5, ts + 8, ts + 11, ts + 14,
             ts + 17);
    lua_pushstring(L, amz);
    lua_setfield(L, t, "date");
    lua_pushstring(L, json_string_value(json_object_get(j, "region")));
    lua_setfield(L, t, "region");
    lua_pushstring(L, json_string_value(json_object_get(j, "service")));
    lua_setfield(L, t, "service");
    lua_pushboolean(L, json_is_true(json_object_get(j, "normalize")));
    lua_setfield(L, t, "normalize");
    lua_pushboolean(L, json_is_true(json_object_get(j, "sign_body")));
    lua_setfield(L, t, "sign_body");
    lua_pushboolean(L, json_is_true(json_object_get(j, "omit_session_token")));
    lua_setfield(L, t, "omit_session_token");
    lua_pushboolean(L, 1);
    lua_setfield(L, t, "debug");
    if (query_mode) {
        lua_pushinteger(L, json_integer_value(json_object_get(j, "expiration_in_seconds")));
        lua_setfield(L, t, "presign");
    }
    int good = 0;
    lua_getfield(L, signer, "sign");
    lua_pushvalue(L, signer);
    lua_pushvalue(L, t);
    if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
        snprintf(msg, sizeof msg, "%s (%s): sign raised: %s", name, pre, lua_tostring(L, -1));
        tap_ok(0, msg);
    } else {
        lua_getfield(L, -1, "canonical_request");
        snprintf(msg, sizeof msg, "%s (%s): canonical request", name, pre);
        good += tap_streq(lua_tostring(L, -1), want_cr, msg);
        lua_pop(L, 1);
        lua_getfield(L, -1, "string_to_sign");
        snprintf(msg, sizeof msg, "%s (%s): string to sign", name, pre);
        good += tap_streq(lua_tostring(L, -1), want_sts, msg);
        lua_pop(L, 1);
        snprintf(msg, sizeof msg, "%s (%s): signature", name, pre);
        good += tap_streq(lua_tostring(L, -2), want_sig, msg);
        if (query_mode) {
            /* the presigned query carries the signature */
            lua_getfield(L, -1, "query");
            char needle[100];
            snprintf(needle, sizeof needle, "X-Amz-Signature=%s", want_sig);
            snprintf(msg, sizeof msg, "%s (%s): presigned query carries the signature", name, pre);
            tap_ok(lua_tostring(L, -1) && strstr(lua_tostring(L, -1), needle) != NULL, msg);
            lua_pop(L, 1);
        } else {
            /* the Authorization header was added to req.headers */
            lua_getfield(L, t, "headers");
            int found = 0;
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                lua_rawgeti(L, -1, 1);
                lua_rawgeti(L, -2, 2);
                if (!strcmp(lua_tostring(L, -2), "Authorization") &&
                    strstr(lua_tostring(L, -1), want_sig))
                    found = 1;
                lua_pop(L, 3);
            }
            lua_pop(L, 1);
            snprintf(msg, sizeof msg, "%s (%s): Authorization header added", name, pre);
            tap_ok(found, msg);
        }
    }
    lua_settop(L, top);
    json_decref(j);
    free(ctx);
    free(req);
    free(want_cr);
    free(want_sts);
    free(want_sig);
    return good == 3;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Evaluate a chunk with the module as `sigv4`; returns the string result or NULL. */
static const char *eval(lua_State *L, const char *code)
{
    lua_settop(L, 1);
    if (luaL_loadstring(L, code) != LUA_OK)
        return lua_tostring(L, -1);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        return lua_tostring(L, -1);
    return lua_tostring(L, -1);
}

int main(int argc, char **argv)
{
    (void)argc;
    char vbuf[PATH_MAX];
    const char *dir = find_vectors(argv[0], vbuf, sizeof vbuf);
    if (!tap_ok(dir != NULL, "SigV4 test vectors found (shared/testdata/sigv4)"))
        return tap_done();
    lua_CFunction open = find_module("aws.sigv4");
    if (!tap_ok(open != NULL, "module aws.sigv4 registered"))
        return tap_done();
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);

    DIR *d = opendir(dir);
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        char p[PATH_MAX + 512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && is_dir(p))
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    tap_ok(n == 38, "38 cases in the suite");
    int header_ok = 0, query_ok = 0;
    for (int i = 0; i < n; i++) {
        header_ok += run_case(L, dir, names[i], 0);
        query_ok += run_case(L, dir, names[i], 1);
        free(names[i]);
    }
    char msg[128];
    snprintf(msg, sizeof msg, "all cases pass with header signing (%d/%d)", header_ok, n);
    tap_ok(header_ok == n && n == 38, msg);
    snprintf(msg, sizeof msg, "all cases pass with query signing (%d/%d)", query_ok, n);
    tap_ok(query_ok == n && n == 38, msg);

    /* map-form headers, key cache, redaction of the signer's tostring */
    const char *r = eval(L, "local sigv4 = ...\n"
                            "local s = sigv4.new{access_key='AKID', secret_key='SECRETKEY', "
                            "token='TOKENVALUE'}\n"
                            "local h = {Host='x.amazonaws.com', ['x-amz-date']='stale'}\n"
                            "local req = {method='POST', path='/', headers=h, body='{}', "
                            "region='us-east-1', service='dms', time=1440938160}\n"
                            "local a = s:sign(req)\n"
                            "local b = s:sign(req)\n"
                            "assert(a == b, 'same request signs the same twice')\n"
                            "assert(h['x-amz-date'] == nil and h['X-Amz-Date'] == "
                            "'20150830T123600Z', 'stale date replaced')\n"
                            "assert(h['X-Amz-Security-Token'] == 'TOKENVALUE')\n"
                            "assert(h.Authorization:find('SignedHeaders=host;x-amz-date;"
                            "x-amz-security-token, Signature=' .. a, 1, true))\n"
                            "local str = tostring(s)\n"
                            "assert(not str:find('SECRETKEY') and not str:find('TOKENVALUE'))\n"
                            "local plain = sigv4.new{access_key='AKID2', secret_key='S2'}\n"
                            "plain:sign(req)\n"
                            "assert(h['X-Amz-Security-Token'] == nil, 'a stale token is removed')\n"
                            "assert(h.Authorization:find('Credential=AKID2/', 1, true))\n"
                            "req.body = '{\"a\":1}'\n"
                            "local b1 = plain:sign(req)\n"
                            "req.body = '{\"a\":2}'\n"
                            "assert(plain:sign(req) ~= b1, 'a new body of the same length is hashed again')\n"
                            "req.body = '{}'\n"
                            "req.region = 'eu-west-1'\n"
                            "assert(s:sign(req) ~= a, 'region is part of the key')\n"
                            "s:close()\n"
                            "assert(not pcall(s.sign, s, req), 'closed signer refuses')\n"
                            "return 'ok'");
    tap_streq(r, "ok", "map headers, key cache per region, closed signer, tostring redacted");

    r = eval(L, "local sigv4 = ...\n"
                "local s = sigv4.new{access_key='AKID', secret_key='S'}\n"
                "local ok, err = pcall(s.sign, s, {region='us-east-1'})\n"
                "assert(not ok and err:find('service'), err)\n"
                "ok, err = pcall(s.sign, s, {region='r', service='s', headers={Host=1}})\n"
                "assert(not ok and err:find('headers'), err)\n"
                "ok, err = pcall(s.sign, s, {region='r', service='s', date='2015'})\n"
                "assert(not ok and err:find('date'), err)\n"
                "ok, err = pcall(sigv4.new, {access_key='A'})\n"
                "assert(not ok and err:find('secret_key'), err)\n"
                "ok, err = pcall(sigv4.new, {access_key='A', secret_key='S\\0hidden'})\n"
                "assert(not ok and err:find('NUL'), 'a NUL byte in the secret: ' .. tostring(err))\n"
                "ok, err = pcall(s.sign, s, {region='us\\0x', service='s'})\n"
                "assert(not ok and err:find('NUL'), 'a NUL byte in the region: ' .. tostring(err))\n"
                "ok, err = pcall(s.sign, s, {region='r', service='s', date='2015083xT123600Z'})\n"
                "assert(not ok and err:find('date'), 'a date not of digits: ' .. tostring(err))\n"
                "local a = s:sign{region='r', service='s', date='20150830T123600Z'}\n"
                "local b = s:sign{region='r', service='s', date='20150831T123600Z'}\n"
                "assert(a ~= b, 'another day, another key')\n"
                "return 'ok'");
    tap_streq(r, "ok", "bad arguments raise clear errors");

    /* The presigned credential is built from a piece of the scratch buffer appended to the
     * buffer itself; when that append grows the buffer, the piece must be read where the
     * buffer is now (it came out with freed heap bytes). Every access key and query length
     * here crosses a growth point somewhere. */
    r = eval(L, "local sigv4 = ...\n"
                "for klen = 1, 2100 do\n"
                "  local ak = ('K'):rep(klen)\n"
                "  local want = ak .. '%2F20150830%2Fus-east-1%2Fs3%2Faws4_request'\n"
                "  for qlen = 0, 40, 8 do\n"
                "    local s = sigv4.new{access_key=ak, secret_key='S'} -- a fresh, small buffer\n"
                "    local q = qlen > 0 and ('x=' .. ('v'):rep(qlen)) or ''\n"
                "    local _, info = s:sign{method='GET', path='/b/k', query=q, region='us-east-1',\n"
                "      service='s3', normalize=false, presign=60, time=1440938160}\n"
                "    local cred = info.query:match('X%-Amz%-Credential=([^&]*)')\n"
                "    if cred ~= want then return ('key %d, query %d: %q'):format(klen, qlen, cred) end\n"
                "    s:close()\n"
                "  end\n"
                "end\n"
                "return 'ok'");
    tap_streq(r, "ok", "presigned X-Amz-Credential is exactly what was given, whatever the sizes");

    r = eval(L, "local sigv4 = ...\n"
                "local s = sigv4.new{access_key='A', secret_key='S'}\n"
                "for _, t in ipairs{0/0, -1, 1e300, math.huge, 253402300800} do\n"
                "  local ok, err = pcall(s.sign, s, {region='r', service='s', time=t})\n"
                "  if ok or not err:find('req.time') then return tostring(t) .. ': ' .. tostring(err) end\n"
                "end\n"
                "local _, info = s:sign{region='r', service='s', time=253402300799, debug=true}\n"
                "return info.string_to_sign:match('\\n(%d+T%d+Z)\\n')");
    tap_streq(r, "99991231T235959Z", "req.time out of range is refused; the last second of 9999 signs");

    r = eval(L, "local sigv4 = ...\n"
                "assert(sigv4.sha256_hex('') == "
                "'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')\n"
                "assert(sigv4.hex(sigv4.hmac_sha256('key', 'The quick brown fox jumps over "
                "the lazy dog')) == "
                "'f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8')\n"
                "assert(sigv4.base64_encode == nil, 'base64 is json.base64_*')\n"
                "assert(sigv4.uri_encode('a b/c~', true) == 'a%20b/c~')\n"
                "assert(sigv4.uri_encode('a b/c', false) == 'a%20b%2Fc')\n"
                "assert(sigv4.uri_decode('a%20b%2fc%') == 'a b/c%')\n"
                "return 'ok'");
    tap_streq(r, "ok", "sha256, hmac, uri helpers");
    lua_close(L);
    return tap_done();
}
