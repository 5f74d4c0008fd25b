/*
 * sigv4.c — AWS Signature Version 4 (pure: no loop, no I/O), exposed as module "aws.sigv4".
 *
 * A signer is a full userdata holding one set of credentials (access key, secret key, optional
 * session token) and a small cache of derived signing keys per (date, region, service). It
 * signs a request described by a Lua table, either with the Authorization header (the headers
 * it adds are written into req.headers) or as a presigned URL (query signing). The canonical
 * request and the string to sign follow the AWS test suite byte for byte (testdata/sigv4).
 *
 * Ownership: the signer owns its credential copies and derived keys (wiped on close), a
 * scratch buffer, and a copy of the last body it hashed (pollers sign the same body again and
 * again). Hashing uses OpenSSL's SHA-256 on stack contexts; nothing here may yield, so the
 * scratch buffer needs no locking.
 *
 * Lua API (module "aws.sigv4"):
 *   sigv4.new{access_key=, secret_key=, token=} -> signer
 *   signer:sign(req) -> signature [, info]
 *     req.method, req.path (as sent: percent-encoded), req.query (as sent, without '?'),
 *     req.headers (map name->value, or array of {name, value} to keep duplicates and order),
 *     req.body or req.payload_hash, req.region, req.service,
 *     req.date ("YYYYMMDDTHHMMSSZ") or req.time (epoch seconds; default: now),
 *     req.normalize (default true: remove dot segments and empty segments, then encode the
 *     path as sent once more, as every service but S3 wants; false for S3: the path as sent,
 *     its escapes kept, other reserved bytes escaped),
 *     req.sign_body (add and sign x-amz-content-sha256, as S3 wants),
 *     req.omit_session_token (add the token after signing), req.presign (expiry seconds: sign
 *     the query instead of adding headers), req.debug (return info in any case).
 *     info = {query=, authorization=, canonical_request=, string_to_sign=, signed_headers=}.
 *   sigv4.sha256_hex(s), sigv4.hmac_sha256(key, msg) (raw), sigv4.hex(s),
 *   sigv4.uri_encode(s [, keep_slash]), sigv4.uri_decode(s)
 *   (base64 is json.base64_encode / json.base64_decode: one implementation, in json.c)
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define OPENSSL_SUPPRESS_DEPRECATED /* SHA256_Init & co., see sha256_parts */
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "flowrun.h"

/* HMAC-SHA256 key schedule: the hash states after the inner and outer pads, so that each MAC
 * with a cached key costs only the message blocks. */
typedef struct {
    SHA256_CTX inner, outer;
} hmac_key_t;

#define SIGNER_MT "flowrun.sigv4.signer"
#define KEY_CACHE 8

typedef struct {
    char date[9]; /* YYYYMMDD */
    char region[32];
    char service[32];
    hmac_key_t key; /* the signing key's HMAC schedule */
    bool used;
} cached_key_t;

typedef struct {
    bool closed;
    char *access_key, *secret_key, *token;
    size_t token_len;
    cached_key_t cache[KEY_CACHE];
    int next_slot;
    /* scratch, reused across calls */
    char *buf;
    size_t cap;
    void *items;
    size_t items_cap;
    void *qitems;
    size_t qitems_cap;
    /* the last body hashed (a poller signs the same body again and again) */
    char *body_copy;
    size_t body_copy_len;
    char body_hash[65];
} signer_t;

typedef struct {
    const char *name; /* lower-cased copy lives in `lname` */
    size_t name_len;
    const char *value;
    size_t value_len;
    char lname[128]; /* lower-cased; longer names are refused */
    int order;
} header_t;

typedef struct {
    size_t k, v; /* offsets of the encoded key and value in the scratch buffer */
    size_t kl, vl;
    const char *buf;
} qparam_t;

/* ---- hashing -------------------------------------------------------------------------------- */

/* SHA-256 through the low-level API: OpenSSL 3 marks it deprecated in favour of EVP, whose
 * per-call provider dispatch costs more than hashing a short canonical request. */
static void sha256_parts(const void *a, size_t al, const void *b, size_t bl, unsigned char out[32])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    if (al)
        SHA256_Update(&c, a, al);
    if (bl)
        SHA256_Update(&c, b, bl);
    SHA256_Final(out, &c);
}

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    sha256_parts(data, len, NULL, 0, out);
}

static void hmac_init(hmac_key_t *hk, const void *key, size_t key_len)
{
    unsigned char k[64], pad[64];
    memset(k, 0, sizeof k);
    if (key_len > 64)
        sha256(key, key_len, k);
    else
        memcpy(k, key, key_len);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    SHA256_Init(&hk->inner);
    SHA256_Update(&hk->inner, pad, 64);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&hk->outer);
    SHA256_Update(&hk->outer, pad, 64);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
}

static void hmac_with(const hmac_key_t *hk, const void *msg, size_t msg_len, unsigned char out[32])
{
    SHA256_CTX c = hk->inner;
    unsigned char inner[32];
    SHA256_Update(&c, msg, msg_len);
    SHA256_Final(inner, &c);
    c = hk->outer;
    SHA256_Update(&c, inner, 32);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof c);
}

static void hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                        unsigned char out[32])
{
    hmac_key_t hk;
    hmac_init(&hk, key, key_len);
    hmac_with(&hk, msg, msg_len, out);
    OPENSSL_cleanse(&hk, sizeof hk);
}

static const char HEX[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX[in[i] >> 4];
        out[2 * i + 1] = HEX[in[i] & 15];
    }
    out[2 * n] = 0;
}

/* ---- scratch buffer ------------------------------------------------------------------------- */

typedef struct {
    signer_t *s;
    lua_State *L;
    size_t len;
} sb_t;

static void sb_grow(sb_t *b, size_t more)
{
    signer_t *s = b->s;
    size_t cap = s->cap ? s->cap : 1024;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(s->buf, cap);
    if (!p)
        luaL_error(b->L, "sigv4: out of memory");
    s->buf = p;
    s->cap = cap;
}

static inline void sb_reserve(sb_t *b, size_t more)
{
    if (b->len + more > b->s->cap)
        sb_grow(b, more);
}

/* Append n bytes from p. p may point into the buffer itself (a piece built earlier in this
 * signature): growing moves the buffer, so such a source is followed by its offset, never by
 * the stale pointer. Appending a piece of the buffer is better said with sb_copy. */
static void sb_add(sb_t *b, const char *p, size_t n)
{
    if (b->len + n > b->s->cap) {
        uintptr_t base = (uintptr_t)b->s->buf, src = (uintptr_t)p;
        bool inside = base && src >= base && src < base + b->s->cap;
        size_t off = inside ? (size_t)(src - base) : 0;
        sb_grow(b, n);
        if (inside)
            p = b->s->buf + off;
    }
    memmove(b->s->buf + b->len, p, n);
    b->len += n;
}

/* Append the n bytes at offset off of the buffer (a piece built earlier): offsets stay valid
 * when the buffer moves, pointers do not. */
static void sb_copy(sb_t *b, size_t off, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->s->buf + b->len, b->s->buf + off, n);
    b->len += n;
}

static void sb_adds(sb_t *b, const char *p)
{
    sb_add(b, p, strlen(p));
}

static void sb_addc(sb_t *b, char c)
{
    sb_reserve(b, 1);
    b->s->buf[b->len++] = c;
}

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/* Percent-encode bytes from outside the buffer (a piece of the buffer: sb_encode_at). */
static void sb_encode(sb_t *b, const char *p, size_t n, bool keep_slash)
{
    sb_reserve(b, 3 * n);
    char *o = b->s->buf + b->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = "0123456789ABCDEF"[c >> 4];
            *o++ = "0123456789ABCDEF"[c & 15];
        }
    }
    b->len = (size_t)(o - b->s->buf);
}

/* Percent-decode p[0..n) into the scratch buffer; returns the offset of the result. */
static size_t sb_decode(sb_t *b, const char *p, size_t n)
{
    sb_reserve(b, n);
    size_t start = b->len;
    char *o = b->s->buf + b->len;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (p[i] == '%' && i + 2 < n && (h = fr_hexval(p[i + 1])) >= 0 &&
            (l = fr_hexval(p[i + 2])) >= 0) {
            *o++ = (char)(h * 16 + l);
            i += 2;
        } else {
            *o++ = p[i];
        }
    }
    b->len = (size_t)(o - b->s->buf);
    return start;
}

static void *grow(lua_State *L, void **p, size_t *cap, size_t bytes)
{
    if (bytes > *cap) {
        void *np = realloc(*p, bytes);
        if (!np)
            luaL_error(L, "sigv4: out of memory");
        *p = np;
        *cap = bytes;
    }
    return *p;
}

static void *scratch_items(lua_State *L, signer_t *s, size_t bytes)
{
    return grow(L, &s->items, &s->items_cap, bytes);
}

/* ---- canonical pieces ----------------------------------------------------------------------- */

/* RFC 3986 remove_dot_segments plus collapsing of empty segments, as the test suite expects:
 * "//a/./b/../c/" -> "/a/c/". */
static void normalize_path(sb_t *b, const char *p, size_t n)
{
    size_t out = b->len, i = 0;
    bool trailing = n > 0 && p[n - 1] == '/';
    while (i < n) {
        while (i < n && p[i] == '/')
            i++;
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t len = j - i;
        bool last = j >= n;
        if (len == 1 && p[i] == '.') {
            trailing = trailing || last;
        } else if (len == 2 && p[i] == '.' && p[i + 1] == '.') {
            while (b->len > out && b->s->buf[b->len - 1] != '/')
                b->len--;
            if (b->len > out)
                b->len--; /* the '/' that opened the removed segment */
            trailing = trailing || last;
        } else if (len > 0) {
            sb_addc(b, '/');
            sb_add(b, p + i, len);
        }
        i = j;
    }
    if (b->len == out || trailing)
        sb_addc(b, '/');
}

/* Encode bytes already in the scratch buffer at [off, off+n), appending the result. */
static void sb_encode_at(sb_t *b, size_t off, size_t n, bool keep_slash)
{
    sb_reserve(b, 3 * n);
    const char *src = b->s->buf + off;
    char *o = b->s->buf + b->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = "0123456789ABCDEF"[c >> 4];
            *o++ = "0123456789ABCDEF"[c & 15];
        }
    }
    b->len = (size_t)(o - b->s->buf);
}

static int cmp_header(const void *a, const void *b)
{
    const header_t *x = a, *y = b;
    int c = strcmp(x->lname, y->lname);
    return c ? c : x->order - y->order;
}

static int cmp_q(const void *a, const void *b)
{
    const qparam_t *x = a, *y = b;
    size_t n = x->kl < y->kl ? x->kl : y->kl;
    const char *xk = x->buf + x->k, *yk = y->buf + y->k;
    const char *xv = x->buf + x->v, *yv = y->buf + y->v;
    int c = memcmp(xk, yk, n);
    if (c == 0 && x->kl != y->kl)
        c = x->kl < y->kl ? -1 : 1;
    if (c)
        return c;
    n = x->vl < y->vl ? x->vl : y->vl;
    c = memcmp(xv, yv, n);
    if (c == 0 && x->vl != y->vl)
        c = x->vl < y->vl ? -1 : 1;
    return c;
}

/* Write a header value trimmed, with runs of whitespace (including folded lines) as one space. */
static void add_trimmed(sb_t *b, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n && isspace((unsigned char)v[i]))
        i++;
    while (n > i && isspace((unsigned char)v[n - 1]))
        n--;
    sb_reserve(b, n - i);
    char *o = b->s->buf + b->len;
    bool space = false;
    for (; i < n; i++) {
        char c = v[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
            space = true;
            continue;
        }
        if (space)
            *o++ = ' ';
        space = false;
        *o++ = c;
    }
    b->len = (size_t)(o - b->s->buf);
}

static bool skip_header(const char *lname, size_t n)
{
    switch (n) {
    case 6:
        return !memcmp(lname, "expect", 6);
    case 10:
        return !memcmp(lname, "user-agent", 10) || !memcmp(lname, "x-amz-date", 10);
    case 13:
        return !memcmp(lname, "authorization", 13);
    case 15:
        return !memcmp(lname, "x-amzn-trace-id", 15);
    case 20:
        return !memcmp(lname, "x-amz-security-token", 20) ||
               !memcmp(lname, "x-amz-content-sha256", 20);
    default:
        return false;
    }
}

static const hmac_key_t *signing_key(signer_t *s, const char *date, const char *region,
                                     const char *service)
{
    for (int i = 0; i < KEY_CACHE; i++) {
        cached_key_t *c = &s->cache[i];
        if (c->used && !strcmp(c->date, date) && !strcmp(c->region, region) &&
            !strcmp(c->service, service))
            return &c->key;
    }
    cached_key_t *c = &s->cache[s->next_slot];
    s->next_slot = (s->next_slot + 1) % KEY_CACHE;
    unsigned char k1[32], k2[32], k3[32], k4[32];
    size_t sl = strlen(s->secret_key);
    char *kin = malloc(sl + 5);
    if (!kin)
        return NULL;
    memcpy(kin, "AWS4", 4);
    memcpy(kin + 4, s->secret_key, sl + 1);
    hmac_sha256(kin, sl + 4, date, 8, k1);
    OPENSSL_cleanse(kin, sl + 4);
    free(kin);
    hmac_sha256(k1, 32, region, strlen(region), k2);
    hmac_sha256(k2, 32, service, strlen(service), k3);
    hmac_sha256(k3, 32, "aws4_request", 12, k4);
    hmac_init(&c->key, k4, 32);
    OPENSSL_cleanse(k1, 32);
    OPENSSL_cleanse(k2, 32);
    OPENSSL_cleanse(k3, 32);
    OPENSSL_cleanse(k4, 32);
    snprintf(c->date, sizeof c->date, "%s", date);
    snprintf(c->region, sizeof c->region, "%s", region);
    snprintf(c->service, sizeof c->service, "%s", service);
    /* a region or service too long for the cache slot must not alias another: don't keep it */
    c->used = strlen(region) < sizeof c->region && strlen(service) < sizeof c->service;
    return &c->key;
}

/* ---- Lua binding ---------------------------------------------------------------------------- */

static signer_t *check_signer(lua_State *L)
{
    signer_t *s = luaL_checkudata(L, 1, SIGNER_MT);
    if (s->closed)
        luaL_error(L, "sigv4: signer is closed");
    return s;
}

static char *dup_field(lua_State *L, int t, const char *name, bool required, size_t *lenp)
{
    lua_getfield(L, t, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (required)
            luaL_error(L, "sigv4.new: field '%s' (a string) is required", name);
        return NULL;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "sigv4.new: field '%s' must be a string, got %s", name, luaL_typename(L, -1));
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    /* the keys are used as C strings: a NUL byte would sign with a shorter key than given */
    if (!lenp && memchr(v, 0, n))
        luaL_error(L, "sigv4.new: field '%s' must not contain NUL bytes", name);
    char *p = malloc(n + 1);
    if (!p)
        luaL_error(L, "sigv4: out of memory");
    memcpy(p, v, n + 1);
    if (lenp)
        *lenp = n;
    lua_pop(L, 1);
    return p;
}

static void signer_release(signer_t *s)
{
    if (s->secret_key) {
        OPENSSL_cleanse(s->secret_key, strlen(s->secret_key));
        free(s->secret_key);
    }
    if (s->token) {
        OPENSSL_cleanse(s->token, s->token_len);
        free(s->token);
    }
    free(s->access_key);
    free(s->buf);
    free(s->items);
    free(s->qitems);
    s->qitems = NULL;
    free(s->body_copy);
    s->body_copy = NULL;
    s->body_copy_len = 0;
    s->qitems_cap = 0;
    OPENSSL_cleanse(s->cache, sizeof s->cache);
    s->access_key = s->secret_key = s->token = NULL;
    s->buf = NULL;
    s->items = NULL;
    s->cap = s->items_cap = 0;
    s->closed = true;
}

static int l_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    signer_t *s = lua_newuserdatauv(L, sizeof *s, 0);
    memset(s, 0, sizeof *s);
    s->closed = true; /* created closed, then the resources are acquired */
    luaL_setmetatable(L, SIGNER_MT);
    s->closed = false;
    s->access_key = dup_field(L, 1, "access_key", true, NULL);
    s->secret_key = dup_field(L, 1, "secret_key", true, NULL);
    s->token = dup_field(L, 1, "token", false, &s->token_len);
    return 1;
}

static int l_close(lua_State *L)
{
    signer_t *s = luaL_checkudata(L, 1, SIGNER_MT);
    if (!s->closed)
        signer_release(s);
    return 0;
}

static int l_tostring(lua_State *L)
{
    signer_t *s = luaL_checkudata(L, 1, SIGNER_MT);
    if (s->closed)
        lua_pushstring(L, SIGNER_MT " (closed)");
    else /* the access key id is not a secret; the secret key and token never appear */
        lua_pushfstring(L, SIGNER_MT " (%s)", s->access_key);
    return 1;
}

static void fill_header(header_t *h, const char *name, size_t nl, const char *value, size_t vl,
                        int order)
{
    h->name = name;
    h->name_len = nl;
    h->value = value;
    h->value_len = vl;
    h->order = order;
    for (size_t i = 0; i < nl; i++)
        h->lname[i] = (char)tolower((unsigned char)name[i]);
    h->lname[nl] = 0;
}

/* Collect the headers to sign from req.headers (at index ht) into the scratch items. */
static header_t *collect_headers(lua_State *L, signer_t *s, int ht, size_t *count, bool *is_array)
{
    size_t n = 0, cap = 16;
    header_t *hs = scratch_items(L, s, cap * sizeof *hs);
    *is_array = lua_rawlen(L, ht) > 0;
    if (*is_array) {
        size_t len = lua_rawlen(L, ht);
        for (size_t i = 1; i <= len; i++) {
            lua_rawgeti(L, ht, (lua_Integer)i);
            if (!lua_istable(L, -1))
                luaL_error(L, "sigv4: req.headers[%d] must be a {name, value} pair", (int)i);
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "sigv4: req.headers[%d] must hold two strings", (int)i);
            size_t nl, vl;
            const char *name = lua_tolstring(L, -2, &nl), *value = lua_tolstring(L, -1, &vl);
            if (nl >= sizeof hs[0].lname || nl == 0)
                luaL_error(L, "sigv4: header name of %d bytes is not allowed", (int)nl);
            lua_pop(L, 3); /* still referenced by the pair table, itself in req.headers */
            if (n == cap) {
                cap *= 2;
                hs = scratch_items(L, s, cap * sizeof *hs);
            }
            fill_header(&hs[n], name, nl, value, vl, (int)n);
            n++;
        }
    } else {
        lua_pushnil(L);
        while (lua_next(L, ht)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "sigv4: req.headers must map header names to strings");
            size_t nl, vl;
            const char *name = lua_tolstring(L, -2, &nl), *value = lua_tolstring(L, -1, &vl);
            if (nl >= sizeof hs[0].lname || nl == 0)
                luaL_error(L, "sigv4: header name of %d bytes is not allowed", (int)nl);
            if (n == cap) {
                cap *= 2;
                hs = scratch_items(L, s, cap * sizeof *hs);
            }
            fill_header(&hs[n], name, nl, value, vl, (int)n);
            n++;
            lua_pop(L, 1);
        }
    }
    *count = n;
    return hs;
}

static void format_time(time_t t, char amz[17])
{
    static time_t last = (time_t)-1;
    static char last_amz[17];
    if (t != last) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(last_amz, sizeof last_amz, "%Y%m%dT%H%M%SZ", &tm);
        last = t;
    }
    memcpy(amz, last_amz, 17);
}

/* signer:sign(req) -> signature [, info]. Does not wait. Raises on malformed req. */
static int l_sign(lua_State *L)
{
    signer_t *s = check_signer(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    const int rt = 2;
    size_t method_len = 3, path_len = 1, query_len = 0, body_len = 0, ph_len = 0, region_len = 0,
           service_len = 0, date_len = 0;
    const char *method = "GET", *path = "/", *query = "", *body = "", *payload_hash = NULL,
               *region = NULL, *service = NULL, *date_s = NULL;
    bool normalize = true, sign_body = false, omit_token = false, debug = false, has_time = false;
    lua_Integer expires = 0;
    double tval = 0;
    /* one pass over the request's fields (cheaper than a lookup per possible field); strings
     * stay referenced by the table, which is on the stack */
    lua_pushnil(L);
    while (lua_next(L, rt)) {
        size_t kl;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : "";
        int vt = lua_type(L, -1);
#define KEY(name) (kl == sizeof(name) - 1 && !memcmp(k, name, sizeof(name) - 1))
#define STR(var, lenvar, name)                                                                     \
    do {                                                                                           \
        if (vt != LUA_TSTRING)                                                                     \
            return luaL_error(L, "sigv4: req.%s must be a string, got %s", name,                   \
                              lua_typename(L, vt));                                                \
        var = lua_tolstring(L, -1, &lenvar);                                                       \
    } while (0)
        if (KEY("method"))
            STR(method, method_len, "method");
        else if (KEY("path"))
            STR(path, path_len, "path");
        else if (KEY("query"))
            STR(query, query_len, "query");
        else if (KEY("body"))
            STR(body, body_len, "body");
        else if (KEY("payload_hash"))
            STR(payload_hash, ph_len, "payload_hash");
        else if (KEY("region"))
            STR(region, region_len, "region");
        else if (KEY("service"))
            STR(service, service_len, "service");
        else if (KEY("date"))
            STR(date_s, date_len, "date");
        else if (KEY("normalize"))
            normalize = lua_toboolean(L, -1);
        else if (KEY("sign_body"))
            sign_body = lua_toboolean(L, -1);
        else if (KEY("omit_session_token"))
            omit_token = lua_toboolean(L, -1);
        else if (KEY("debug"))
            debug = lua_toboolean(L, -1);
        else if (KEY("time")) {
            if (!lua_isnumber(L, -1))
                return luaL_error(L, "sigv4: req.time must be a number (epoch seconds)");
            tval = lua_tonumber(L, -1);
            /* a time_t conversion out of range is undefined, and years past 9999 do not fit
             * the 16-character date */
            if (!(tval >= 0 && tval < 253402300800.0))
                return luaL_error(L, "sigv4: req.time must be epoch seconds from 1970 to 9999");
            has_time = true;
        } else if (KEY("presign")) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) <= 0)
                return luaL_error(L, "sigv4: req.presign must be a positive integer (seconds)");
            expires = lua_tointeger(L, -1);
        }
#undef STR
#undef KEY
        lua_pop(L, 1);
    }
    if (!region || !region_len)
        return luaL_error(L, "sigv4: req.region is required");
    if (!service || !service_len)
        return luaL_error(L, "sigv4: req.service is required");
    /* both are in the scope and key the signing-key cache as C strings */
    if (memchr(region, '/', region_len) || memchr(service, '/', service_len) ||
        memchr(region, 0, region_len) || memchr(service, 0, service_len))
        return luaL_error(L, "sigv4: region and service may not contain '/' or NUL bytes");
    bool presign = expires > 0;
    char amz[17];
    if (date_s) {
        bool shape = date_len == 16 && date_s[8] == 'T' && date_s[15] == 'Z';
        for (size_t i = 0; shape && i < 15; i++)
            shape = i == 8 || (date_s[i] >= '0' && date_s[i] <= '9');
        if (!shape)
            return luaL_error(L, "sigv4: req.date must look like 20150830T123600Z");
        memcpy(amz, date_s, 16);
        amz[16] = 0;
    } else {
        format_time(has_time ? (time_t)tval : time(NULL), amz);
    }
    char date[9];
    memcpy(date, amz, 8);
    date[8] = 0;

    lua_getfield(L, rt, "headers");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, rt, "headers");
    }
    if (!lua_istable(L, -1))
        return luaL_error(L, "sigv4: req.headers must be a table");
    const int ht = lua_gettop(L);
    size_t nh;
    bool is_array;
    header_t *hs = collect_headers(L, s, ht, &nh, &is_array);

    char phex[65];
    if (payload_hash) {
        if (ph_len > 64)
            return luaL_error(L, "sigv4: req.payload_hash is too long");
        memcpy(phex, payload_hash, ph_len);
        phex[ph_len] = 0;
    } else if (s->body_copy && body_len == s->body_copy_len &&
               !memcmp(body, s->body_copy, body_len)) {
        memcpy(phex, s->body_hash, 65);
    } else {
        unsigned char d[32];
        sha256(body, body_len, d);
        to_hex(d, 32, phex);
        if (body_len <= 4096) {
            char *copy = realloc(s->body_copy, body_len ? body_len : 1);
            if (copy) {
                memcpy(copy, body, body_len);
                s->body_copy = copy;
                s->body_copy_len = body_len;
                memcpy(s->body_hash, phex, 65);
            }
        }
    }
    bool add_token = s->token && !omit_token;

    /* Headers this signer sets are dropped from signing. The write-back below needs a scan of
     * the table only when one of them is spelled otherwise than it writes it, or will not be
     * written this time (a token left from other credentials) */
    size_t keep = 0;
    bool cleanup = false;
    for (size_t i = 0; i < nh; i++) {
        if (!skip_header(hs[i].lname, hs[i].name_len)) {
            hs[keep++] = hs[i];
            continue;
        }
        const char *ln = hs[i].lname, *n = hs[i].name;
        size_t nl = hs[i].name_len;
        if (!strcmp(ln, "x-amz-date"))
            cleanup |= nl != 10 || memcmp(n, "X-Amz-Date", 10);
        else if (!strcmp(ln, "authorization"))
            cleanup |= nl != 13 || memcmp(n, "Authorization", 13);
        else if (!strcmp(ln, "x-amz-security-token"))
            cleanup |= !s->token || memcmp(n, "X-Amz-Security-Token", 20);
        else if (!strcmp(ln, "x-amz-content-sha256"))
            cleanup |= !sign_body || memcmp(n, "X-Amz-Content-SHA256", 20);
    }
    nh = keep;
    if (!presign) {
        hs = scratch_items(L, s, (nh + 3) * sizeof *hs);
        fill_header(&hs[nh], "x-amz-date", 10, amz, 16, (int)nh);
        nh++;
        if (add_token) {
            fill_header(&hs[nh], "x-amz-security-token", 20, s->token, s->token_len, (int)nh);
            nh++;
        }
        if (sign_body) {
            fill_header(&hs[nh], "x-amz-content-sha256", 20, phex, 64, (int)nh);
            nh++;
        }
    }
    for (size_t i = 1; i < nh; i++) { /* few headers: insertion sort, stable */
        header_t h = hs[i];
        size_t j = i;
        while (j > 0 && cmp_header(&hs[j - 1], &h) > 0) {
            hs[j] = hs[j - 1];
            j--;
        }
        hs[j] = h;
    }

    /* Strings are built in the signer's scratch buffer and referred to by offsets, since the
     * buffer may move as it grows. */
    sb_t b = {s, L, 0};
    size_t scope_off = b.len;
    sb_add(&b, date, 8);
    sb_addc(&b, '/');
    sb_add(&b, region, region_len);
    sb_addc(&b, '/');
    sb_add(&b, service, service_len);
    sb_adds(&b, "/aws4_request");
    size_t scope_len = b.len - scope_off;

    size_t sh_off = b.len;
    for (size_t i = 0; i < nh; i++) {
        if (i > 0) {
            if (!strcmp(hs[i - 1].lname, hs[i].lname))
                continue;
            sb_addc(&b, ';');
        }
        sb_adds(&b, hs[i].lname);
    }
    size_t sh_len = b.len - sh_off;

    /* query parameters: decode what was sent, encode canonically, sort */
    size_t nq = 0, qcap = 16;
    qparam_t *qs = grow(L, &s->qitems, &s->qitems_cap, qcap * sizeof *qs);
    for (size_t i = 0; i < query_len;) {
        size_t j = i;
        while (j < query_len && query[j] != '&')
            j++;
        if (j > i) {
            size_t eq = i;
            while (eq < j && query[eq] != '=')
                eq++;
            if (nq == qcap) {
                qcap *= 2;
                qs = grow(L, &s->qitems, &s->qitems_cap, qcap * sizeof *qs);
            }
            size_t d = sb_decode(&b, query + i, eq - i), dl = b.len - d;
            qs[nq].k = b.len;
            sb_encode_at(&b, d, dl, false);
            qs[nq].kl = b.len - qs[nq].k;
            size_t vstart = eq < j ? eq + 1 : j;
            d = sb_decode(&b, query + vstart, j - vstart);
            dl = b.len - d;
            qs[nq].v = b.len;
            sb_encode_at(&b, d, dl, false);
            qs[nq].vl = b.len - qs[nq].v;
            nq++;
        }
        i = j + 1;
    }
    if (presign) {
        if (nq + 6 > qcap) {
            qcap = nq + 6;
            qs = grow(L, &s->qitems, &s->qitems_cap, qcap * sizeof *qs);
        }
#define QADD(key, stmt)                                                                            \
    do {                                                                                           \
        qs[nq].k = b.len;                                                                          \
        sb_adds(&b, key);                                                                          \
        qs[nq].kl = b.len - qs[nq].k;                                                              \
        qs[nq].v = b.len;                                                                          \
        stmt;                                                                                      \
        qs[nq].vl = b.len - qs[nq].v;                                                              \
        nq++;                                                                                      \
    } while (0)
        QADD("X-Amz-Algorithm", sb_adds(&b, "AWS4-HMAC-SHA256"));
        size_t cred_off = b.len;
        sb_adds(&b, s->access_key);
        sb_addc(&b, '/');
        sb_copy(&b, scope_off, scope_len);
        size_t cred_len = b.len - cred_off;
        QADD("X-Amz-Credential", sb_encode_at(&b, cred_off, cred_len, false));
        QADD("X-Amz-Date", sb_add(&b, amz, 16));
        char ex[32];
        snprintf(ex, sizeof ex, "%lld", (long long)expires);
        QADD("X-Amz-Expires", sb_adds(&b, ex));
        if (add_token)
            QADD("X-Amz-Security-Token", sb_encode(&b, s->token, s->token_len, false));
        QADD("X-Amz-SignedHeaders", sb_encode_at(&b, sh_off, sh_len, false));
#undef QADD
    }
    for (size_t i = 0; i < nq; i++)
        qs[i].buf = s->buf; /* the buffer may have moved while building */
    qsort(qs, nq, sizeof *qs, cmp_q);
    size_t cq_off = b.len;
    for (size_t i = 0; i < nq; i++) {
        if (i)
            sb_addc(&b, '&');
        sb_copy(&b, qs[i].k, qs[i].kl);
        sb_addc(&b, '=');
        sb_copy(&b, qs[i].v, qs[i].vl);
    }
    size_t cq_len = b.len - cq_off;

    /* canonical path */
    size_t cp_off, cp_len;
    if (normalize) {
        size_t np = b.len;
        normalize_path(&b, path, path_len);
        size_t npl = b.len - np;
        cp_off = b.len;
        sb_encode_at(&b, np, npl, true);
    } else {
        /* S3: the path as sent, escapes kept as they are (a key's "%2F" is not a '/'); bytes
         * that were not escaped but must be (a raw space) are escaped */
        cp_off = b.len;
        sb_reserve(&b, 3 * path_len);
        char *o = s->buf + b.len;
        for (size_t i = 0; i < path_len; i++) {
            unsigned char c = (unsigned char)path[i];
            if (c == '%' && i + 2 < path_len && fr_hexval(path[i + 1]) >= 0 &&
                fr_hexval(path[i + 2]) >= 0) {
                *o++ = '%';
                *o++ = (char)toupper((unsigned char)path[i + 1]);
                *o++ = (char)toupper((unsigned char)path[i + 2]);
                i += 2;
            } else if (unreserved(c) || c == '/') {
                *o++ = (char)c;
            } else {
                *o++ = '%';
                *o++ = "0123456789ABCDEF"[c >> 4];
                *o++ = "0123456789ABCDEF"[c & 15];
            }
        }
        b.len = (size_t)(o - s->buf);
    }
    cp_len = b.len - cp_off;

    /* the canonical request */
    size_t cr_off = b.len;
    sb_add(&b, method, method_len);
    sb_addc(&b, '\n');
    sb_copy(&b, cp_off, cp_len);
    sb_addc(&b, '\n');
    sb_copy(&b, cq_off, cq_len);
    sb_addc(&b, '\n');
    for (size_t i = 0; i < nh; i++) {
        if (i > 0 && !strcmp(hs[i - 1].lname, hs[i].lname)) {
            sb_addc(&b, ',');
        } else {
            if (i > 0)
                sb_addc(&b, '\n');
            sb_adds(&b, hs[i].lname);
            sb_addc(&b, ':');
        }
        add_trimmed(&b, hs[i].value, hs[i].value_len);
    }
    if (nh)
        sb_addc(&b, '\n');
    sb_addc(&b, '\n');
    sb_copy(&b, sh_off, sh_len);
    sb_addc(&b, '\n');
    sb_add(&b, phex, strlen(phex));
    size_t cr_len = b.len - cr_off;

    unsigned char d[32];
    char crhex[65];
    sha256(s->buf + cr_off, cr_len, d);
    to_hex(d, 32, crhex);
    size_t sts_off = b.len;
    sb_adds(&b, "AWS4-HMAC-SHA256\n");
    sb_add(&b, amz, 16);
    sb_addc(&b, '\n');
    sb_copy(&b, scope_off, scope_len);
    sb_addc(&b, '\n');
    sb_add(&b, crhex, 64);
    size_t sts_len = b.len - sts_off;

    const hmac_key_t *key = signing_key(s, date, region, service);
    if (!key)
        return luaL_error(L, "sigv4: out of memory");
    char sig[65];
    hmac_with(key, s->buf + sts_off, sts_len, d);
    to_hex(d, 32, sig);

    /* results */
    size_t auth_off = 0, auth_len = 0, q_off = 0, q_len = 0;
    if (presign) {
        q_off = b.len;
        sb_copy(&b, cq_off, cq_len);
        sb_adds(&b, "&X-Amz-Signature=");
        sb_add(&b, sig, 64);
        if (s->token && omit_token) {
            sb_adds(&b, "&X-Amz-Security-Token=");
            sb_encode(&b, s->token, s->token_len, false);
        }
        q_len = b.len - q_off;
    } else {
        auth_off = b.len;
        sb_adds(&b, "AWS4-HMAC-SHA256 Credential=");
        sb_adds(&b, s->access_key);
        sb_addc(&b, '/');
        sb_copy(&b, scope_off, scope_len);
        sb_adds(&b, ", SignedHeaders=");
        sb_copy(&b, sh_off, sh_len);
        sb_adds(&b, ", Signature=");
        sb_add(&b, sig, 64);
        auth_len = b.len - auth_off;

        /* write the headers the request must carry */
        if (is_array) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, ht);
#define APPEND(name, v, vl)                                                                        \
    do {                                                                                           \
        lua_createtable(L, 2, 0);                                                                  \
        lua_pushstring(L, name);                                                                   \
        lua_rawseti(L, -2, 1);                                                                     \
        lua_pushlstring(L, v, vl);                                                                 \
        lua_rawseti(L, -2, 2);                                                                     \
        lua_rawseti(L, ht, ++n);                                                                   \
    } while (0)
            APPEND("X-Amz-Date", amz, 16);
            if (s->token)
                APPEND("X-Amz-Security-Token", s->token, s->token_len);
            if (sign_body)
                APPEND("X-Amz-Content-SHA256", phex, 64);
            APPEND("Authorization", s->buf + auth_off, auth_len);
#undef APPEND
        } else {
            /* remove any spelling of the names set below, then set them */
            lua_pushnil(L);
            while (cleanup && lua_next(L, ht)) {
                lua_pop(L, 1);
                size_t kl;
                const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &kl) : NULL;
                if (k && (kl == 10 || kl == 13 || kl == 20)) {
                    if (!strcasecmp(k, "x-amz-date") || !strcasecmp(k, "authorization") ||
                        !strcasecmp(k, "x-amz-security-token") ||
                        !strcasecmp(k, "x-amz-content-sha256")) {
                        lua_pushvalue(L, -1);
                        lua_pushnil(L);
                        lua_rawset(L, ht);
                    }
                }
            }
            lua_pushlstring(L, amz, 16);
            lua_setfield(L, ht, "X-Amz-Date");
            if (s->token) {
                lua_pushlstring(L, s->token, s->token_len);
                lua_setfield(L, ht, "X-Amz-Security-Token");
            }
            if (sign_body) {
                lua_pushlstring(L, phex, 64);
                lua_setfield(L, ht, "X-Amz-Content-SHA256");
            }
            lua_pushlstring(L, s->buf + auth_off, auth_len);
            lua_setfield(L, ht, "Authorization");
        }
    }

    lua_pushlstring(L, sig, 64);
    if (!presign && !debug)
        return 1;
    lua_createtable(L, 0, 6);
    if (presign) {
        lua_pushlstring(L, s->buf + q_off, q_len);
        lua_setfield(L, -2, "query");
    } else {
        lua_pushlstring(L, s->buf + auth_off, auth_len);
        lua_setfield(L, -2, "authorization");
    }
    lua_pushlstring(L, s->buf + sh_off, sh_len);
    lua_setfield(L, -2, "signed_headers");
    if (debug) {
        lua_pushlstring(L, s->buf + cr_off, cr_len);
        lua_setfield(L, -2, "canonical_request");
        lua_pushlstring(L, s->buf + sts_off, sts_len);
        lua_setfield(L, -2, "string_to_sign");
    }
    return 2;
}

/* ---- helpers exposed to Lua ----------------------------------------------------------------- */

static int l_sha256_hex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char d[32];
    char hex[65];
    sha256(s, n, d);
    to_hex(d, 32, hex);
    lua_pushlstring(L, hex, 64);
    return 1;
}

static int l_hmac_sha256(lua_State *L)
{
    size_t kl, ml;
    const char *k = luaL_checklstring(L, 1, &kl);
    const char *m = luaL_checklstring(L, 2, &ml);
    unsigned char d[32];
    hmac_sha256(k, kl, m, ml, d);
    lua_pushlstring(L, (const char *)d, 32);
    return 1;
}

static int l_hex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *o = luaL_buffinitsize(L, &b, 2 * n + 1);
    to_hex((const unsigned char *)s, n, o);
    luaL_pushresultsize(&b, 2 * n);
    return 1;
}

static int l_uri_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    bool keep_slash = lua_toboolean(L, 2);
    luaL_Buffer b;
    char *o = luaL_buffinitsize(L, &b, 3 * n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            o[w++] = (char)c;
        } else {
            o[w++] = '%';
            o[w++] = "0123456789ABCDEF"[c >> 4];
            o[w++] = "0123456789ABCDEF"[c & 15];
        }
    }
    luaL_pushresultsize(&b, w);
    return 1;
}

static int l_uri_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *o = luaL_buffinitsize(L, &b, n + 1);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < n && (h = fr_hexval(s[i + 1])) >= 0 &&
            (l = fr_hexval(s[i + 2])) >= 0) {
            o[w++] = (char)(h * 16 + l);
            i += 2;
        } else {
            o[w++] = s[i];
        }
    }
    luaL_pushresultsize(&b, w);
    return 1;
}

static int luaopen_sigv4(lua_State *L)
{
    static const luaL_Reg meth[] = {{"sign", l_sign}, {"close", l_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {
        {"__gc", l_close}, {"__close", l_close}, {"__tostring", l_tostring}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"new", l_new}, {"sha256_hex", l_sha256_hex}, {"hmac_sha256", l_hmac_sha256},
        {"hex", l_hex}, {"uri_encode", l_uri_encode}, {"uri_decode", l_uri_decode},
        {NULL, NULL}};
    if (luaL_newmetatable(L, SIGNER_MT)) {
        luaL_setfuncs(L, meta, 0);
        luaL_newlib(L, meth);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}

FR_MODULE("aws.sigv4", luaopen_sigv4)
