/*
 * http.c — HTTP(S) requests on libcurl's multi-socket API driven by the libuv loop, module
 * "http". One multi handle for the process: its connection cache keeps connections alive and
 * reuses them between requests, its DNS cache is shared. Each socket curl wants watched gets a
 * uv_poll handle; curl's single timeout is one uv_timer (curl's multi-uv example).
 *
 *   http.request{method=, url=, headers=, body=, timeout=, connect_timeout=, ca_file=,
 *                max_body=} -> {status=, headers=, body=} | nil, err
 *     Waits (suspends only the calling task). headers: a map name -> value, or an array of
 *     {name, value}; response header names are lower-cased, repeated ones joined with ", ".
 *     timeout: total seconds (default 60), connect_timeout: seconds (default 10), checked by
 *     fr_duration_arg (math.huge: no limit); max_body: bytes (default 1 GiB). TLS peers are
 *     always verified (system store, or ca_file). Proxies come from the usual environment
 *     variables (curl reads them). Failures are error objects with code http.timeout,
 *     http.connect, http.reset, http.truncated, http.tls, http.url, http.too_large or
 *     http.error (also when libcurl cannot start the transfer), and fields url (without its
 *     query), curl_code. A bad argument (a header with a line break, a timeout that is not a
 *     duration) raises. Cancelling the task removes the transfer from the multi handle at once.
 *
 * Ownership: the multi handle, the uv_timer and the uv_poll handles are owned here (handles
 * are malloc'd and freed in their close callbacks); easy handles belong to the op in flight,
 * then return to a small idle pool; everything is released by the shutdown hook.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "flowrun.h"

#define POOL_MAX 128
#define DEFAULT_MAX_BODY ((size_t)1 << 30)

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

typedef struct {
    fr_op_t base;
    CURL *easy;
    struct curl_slist *hdrs;
    char *body;
    size_t body_len;
    buf_t resp;
    buf_t head; /* "name\0value\0" pairs of the final response */
    size_t max_body;
    bool too_large;
    bool in_multi;
    CURLcode result;
    long status;
    double started;
    char *url; /* for errors and debug, without the query */
    char method[16];
    char errbuf[CURL_ERROR_SIZE];
} http_op_t;

typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
} sock_t;

static struct {
    CURLM *multi;
    uv_timer_t *timer;
    CURL *pool[POOL_MAX];
    int npool;
    sock_t **socks; /* by file descriptor (see sock_for) */
    size_t nsocks;
    bool registered;
} H;

static bool buf_add(buf_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

static void buf_free(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- curl <-> libuv ------------------------------------------------------------------------- */

static void check_done(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(H.multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        http_op_t *op = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&op);
        CURLcode rc = m->data.result;
        curl_multi_remove_handle(H.multi, m->easy_handle);
        if (!op)
            continue;
        op->in_multi = false;
        op->result = rc;
        curl_easy_getinfo(op->easy, CURLINFO_RESPONSE_CODE, &op->status);
        fr_op_complete(op);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_t *s = p->data;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(H.multi, s->fd, flags, &running);
    check_done();
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    int running;
    curl_multi_socket_action(H.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

/* Close callback for the timer and the polls (the uv handle is each struct's first member). */
static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* Poll handles are kept per file descriptor once made: a keep-alive connection goes back to
 * curl's cache after each transfer (CURL_POLL_REMOVE) and is taken again by the next one, and
 * a stopped handle is simply started again instead of being closed and re-created each time.
 * curl reports REMOVE before it closes a socket, so a stopped handle never watches a closed
 * descriptor; a new socket that gets the same number reuses the handle. */
static sock_t *sock_for(curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= H.nsocks) {
        size_t n = H.nsocks ? H.nsocks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        sock_t **p = realloc(H.socks, n * sizeof *p);
        if (!p)
            return NULL;
        memset(p + H.nsocks, 0, (n - H.nsocks) * sizeof *p);
        H.socks = p;
        H.nsocks = n;
    }
    sock_t *s = H.socks[fd];
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return NULL;
        if (uv_poll_init_socket(fr_loop(), &s->poll, fd) != 0) {
            free(s);
            return NULL;
        }
        s->fd = fd;
        s->poll.data = s;
        H.socks[fd] = s;
    }
    return s;
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    (void)userp;
    sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            curl_multi_assign(H.multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = sock_for(fd);
        if (!s)
            return -1;
        curl_multi_assign(H.multi, fd, s);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    (void)userp;
    if (timeout_ms < 0)
        uv_timer_stop(H.timer);
    else
        uv_timer_start(H.timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static void http_shutdown(void)
{
    if (!H.multi)
        return;
    for (int i = 0; i < H.npool; i++)
        curl_easy_cleanup(H.pool[i]);
    H.npool = 0;
    curl_multi_cleanup(H.multi); /* closes the cached connections (sock_cb stops their polls) */
    H.multi = NULL;
    for (size_t i = 0; i < H.nsocks; i++) {
        if (H.socks[i]) {
            uv_poll_stop(&H.socks[i]->poll);
            uv_close((uv_handle_t *)&H.socks[i]->poll, free_handle);
        }
    }
    free(H.socks);
    H.socks = NULL;
    H.nsocks = 0;
    uv_timer_stop(H.timer);
    H.timer->data = NULL;
    uv_close((uv_handle_t *)H.timer, free_handle);
    H.timer = NULL;
    curl_global_cleanup();
}

static bool http_init(void)
{
    if (H.multi)
        return true;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return false;
    H.timer = malloc(sizeof *H.timer);
    if (!H.timer)
        return false;
    uv_timer_init(fr_loop(), H.timer);
    H.timer->data = NULL;
    H.multi = curl_multi_init();
    curl_multi_setopt(H.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(H.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(H.multi, CURLMOPT_MAXCONNECTS, 256L);
    if (!H.registered) {
        fr_at_shutdown(http_shutdown);
        H.registered = true;
    }
    return true;
}

/* ---- the op --------------------------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    http_op_t *op = ud;
    size_t len = size * n;
    if (op->resp.len + len > op->max_body) {
        op->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return buf_add(&op->resp, p, len) ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    http_op_t *op = ud;
    size_t len = size * n;
    if (len >= 5 && !strncmp(p, "HTTP/", 5)) {
        op->head.len = 0; /* a new response (after 100 Continue or a redirect) */
        return len;
    }
    const char *colon = memchr(p, ':', len);
    if (!colon)
        return len;
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    char zero = 0;
    if (!buf_add(&op->head, p, nl) || !buf_add(&op->head, &zero, 1) ||
        !buf_add(&op->head, v, (size_t)(end - v)) || !buf_add(&op->head, &zero, 1))
        return 0;
    return len;
}

static void op_release(http_op_t *op)
{
    if (op->easy) {
        if (op->in_multi)
            curl_multi_remove_handle(H.multi, op->easy);
        op->in_multi = false;
        if (H.npool < POOL_MAX && H.multi) {
            curl_easy_reset(op->easy);
            H.pool[H.npool++] = op->easy;
        } else {
            curl_easy_cleanup(op->easy);
        }
        op->easy = NULL;
    }
    curl_slist_free_all(op->hdrs);
    op->hdrs = NULL;
    free(op->body);
    op->body = NULL;
    buf_free(&op->resp);
    buf_free(&op->head);
    free(op->url);
    op->url = NULL;
}

static void vt_free(fr_op_t *o)
{
    op_release((http_op_t *)o);
}

static bool vt_cancel(fr_op_t *o)
{
    http_op_t *op = (http_op_t *)o;
    if (op->in_multi) {
        curl_multi_remove_handle(H.multi, op->easy);
        op->in_multi = false;
    }
    return true;
}

static const char *error_code(CURLcode rc, bool *retryable)
{
    *retryable = true;
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return "http.timeout";
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "http.connect";
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return "http.reset";
    case CURLE_PARTIAL_FILE:
        return "http.truncated";
    default:
        break;
    }
    *retryable = false;
    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
        return "http.tls";
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "http.url";
    default:
        return "http.error";
    }
}

static int vt_results(lua_State *L, fr_op_t *o)
{
    http_op_t *op = (http_op_t *)o;
    double ms = (fr_now() - op->started) * 1000.0;
    if (op->result != CURLE_OK || op->too_large) {
        bool retryable;
        const char *code = op->too_large ? "http.too_large" : error_code(op->result, &retryable);
        if (op->too_large)
            retryable = false;
        char msg[CURL_ERROR_SIZE + 512];
        if (op->too_large)
            snprintf(msg, sizeof msg, "%s %s: answer larger than %zu bytes", op->method, op->url,
                     op->max_body);
        else
            snprintf(msg, sizeof msg, "%s %s: %s", op->method, op->url,
                     op->errbuf[0] ? op->errbuf : curl_easy_strerror(op->result));
        if (fr_debug_enabled("http"))
            fr_log("http", "%s %s failed after %.1f ms: %s", op->method, op->url, ms, code);
        lua_pushnil(L);
        fr_error_push(L, code, msg, retryable);
        lua_pushstring(L, op->url);
        lua_setfield(L, -2, "url");
        lua_pushinteger(L, op->result);
        lua_setfield(L, -2, "curl_code");
        return 2;
    }
    if (fr_debug_enabled("http"))
        fr_log("http", "%s %s -> %ld, %zu bytes, %.1f ms", op->method, op->url, op->status,
               op->resp.len, ms);
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, op->status);
    lua_setfield(L, -2, "status");
    lua_newtable(L);
    for (size_t i = 0; i < op->head.len;) {
        char *name = op->head.p + i;
        size_t nl = strlen(name);
        char *value = name + nl + 1;
        size_t vl = strlen(value);
        i += nl + vl + 2;
        for (size_t k = 0; k < nl; k++)
            name[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ? name[k] + 32 : name[k]);
        lua_pushlstring(L, name, nl);
        if (lua_rawget(L, -2) == LUA_TSTRING) {
            lua_pushlstring(L, ", ", 2);
            lua_pushlstring(L, value, vl);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, value, vl);
        }
        lua_pushlstring(L, name, nl);
        lua_insert(L, -2);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, op->resp.p ? op->resp.p : "", op->resp.len);
    lua_setfield(L, -2, "body");
    return 1;
}

static const fr_op_vt_t http_vt = {"http.request", vt_results, vt_cancel, vt_free, true};

/* ---- Lua binding ---------------------------------------------------------------------------- */

/* A duration field of the request table in seconds (fr_duration_arg's rule), or def. */
static double opt_seconds(lua_State *L, const char *name, double def)
{
    lua_getfield(L, 1, name);
    double v = def;
    if (!lua_isnil(L, -1)) {
        char what[64];
        snprintf(what, sizeof what, "http.request %s", name);
        v = fr_duration_arg(L, -1, what);
    }
    lua_pop(L, 1);
    return v;
}

/* Seconds as curl's milliseconds: at least 1 (0 means "no limit" to curl); forever as `none`. */
static long curl_ms(double s, long none)
{
    if (s >= FR_FOREVER)
        return none;
    double ms = ceil(s * 1000.0);
    return ms < 1 ? 1 : (long)ms;
}

static const char *opt_string(lua_State *L, const char *name, size_t *len)
{
    lua_getfield(L, 1, name);
    const char *v = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "http.request: %s must be a string, got %s", name, luaL_typename(L, -1));
        v = lua_tolstring(L, -1, len);
    }
    lua_pop(L, 1); /* still referenced by the argument table */
    return v;
}

/* Check req.headers and count them (so that nothing can raise once curl state exists). */
static void check_headers(lua_State *L)
{
    lua_getfield(L, 1, "headers");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "http.request: headers must be a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "http.request: header %s must be a string", lua_tostring(L, -2));
        } else if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "http.request: headers[i] must be a {name, value} pair of strings");
            lua_pop(L, 2);
        } else {
            luaL_error(L, "http.request: headers must map names to strings");
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Append "name: value" (an empty value is sent as an empty header: "name;"). With value NULL
 * the header curl would add by itself is removed instead ("name:"). */
static bool add_header(http_op_t *op, const char *name, const char *value, bool *has_ct)
{
    if (!value) {
        char line[64];
        snprintf(line, sizeof line, "%s:", name);
        struct curl_slist *l = curl_slist_append(op->hdrs, line);
        if (!l)
            return false;
        op->hdrs = l;
        return true;
    }
    if (!strcasecmp(name, "content-type"))
        *has_ct = true;
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return false; /* no header injection */
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (!line)
        return false;
    if (*value)
        snprintf(line, n, "%s: %s", name, value);
    else
        snprintf(line, n, "%s;", name); /* curl's way to send an empty header */
    struct curl_slist *l = curl_slist_append(op->hdrs, line);
    free(line);
    if (!l)
        return false;
    op->hdrs = l;
    return true;
}

static char *url_without_query(const char *url)
{
    size_t n = strcspn(url, "?#");
    char *u = malloc(n + 1);
    if (u) {
        memcpy(u, url, n);
        u[n] = 0;
    }
    return u;
}

/* Starting failed because of the request (a header with a line break) or memory: raises. */
static int start_fail(lua_State *L, http_op_t *op, const char *why)
{
    op_release(op);
    fr_op_discard(op);
    return luaL_error(L, "http.request: %s", why);
}

/* Starting failed in libcurl: nil and an http.error object, like a failed transfer. */
static int start_error(lua_State *L, http_op_t *op, const char *why)
{
    if (op) {
        op_release(op);
        fr_op_discard(op);
    }
    lua_pushnil(L);
    lua_pushfstring(L, "http.request: %s", why);
    fr_error_push(L, "http.error", lua_tostring(L, -1), false);
    lua_remove(L, -2);
    return 2;
}

static int l_request(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    size_t url_len, body_len = 0;
    const char *url = opt_string(L, "url", &url_len);
    if (!url)
        return luaL_error(L, "http.request: url (a string) is required");
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
        return luaL_error(L, "http.request: url must start with http:// or https://");
    const char *method = opt_string(L, "method", NULL);
    if (!method)
        method = "GET";
    if (strlen(method) >= 16 || strpbrk(method, " \r\n"))
        return luaL_error(L, "http.request: bad method");
    const char *body = opt_string(L, "body", &body_len);
    const char *ca_file = opt_string(L, "ca_file", NULL);
    double timeout = opt_seconds(L, "timeout", 60);
    double connect_timeout = opt_seconds(L, "connect_timeout", 10);
    lua_getfield(L, 1, "max_body");
    size_t max_body = lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0
                          ? (size_t)lua_tointeger(L, -1)
                          : DEFAULT_MAX_BODY;
    lua_pop(L, 1);
    check_headers(L);
    if (!http_init())
        return start_error(L, NULL, "cannot initialise libcurl");

    http_op_t *op = fr_op_new(L, sizeof *op, &http_vt);
    /* from here: no Lua error without releasing the op (start_fail) */
    op->max_body = max_body;
    op->started = fr_now();
    snprintf(op->method, sizeof op->method, "%s", method);
    op->url = url_without_query(url);
    op->easy = H.npool ? H.pool[--H.npool] : curl_easy_init();
    if (!op->easy || !op->url)
        return start_fail(L, op, "out of memory");
    CURL *e = op->easy;
    bool has_ct = false, ok = true;
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (ok && lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                ok = add_header(op, lua_tostring(L, -2), lua_tostring(L, -1), &has_ct);
            } else {
                lua_rawgeti(L, -1, 1);
                lua_rawgeti(L, -2, 2);
                ok = add_header(op, lua_tostring(L, -2), lua_tostring(L, -1), &has_ct);
                lua_pop(L, 2);
            }
            lua_pop(L, 1);
        }
        if (!ok)
            lua_pop(L, 1); /* the key left by the interrupted traversal */
    }
    lua_pop(L, 1);
    if (!ok)
        return start_fail(L, op, "bad header (a name or value with a line break?)");
    /* no "Expect: 100-continue" round trip; no form content type curl would invent */
    ok = add_header(op, "Expect", NULL, &has_ct);
    if (ok && !has_ct && body)
        ok = add_header(op, "Content-Type", NULL, &has_ct);
    if (!ok)
        return start_fail(L, op, "out of memory");
    if (body) {
        op->body = malloc(body_len ? body_len : 1);
        if (!op->body)
            return start_fail(L, op, "out of memory");
        memcpy(op->body, body, body_len);
        op->body_len = body_len;
    }

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, op);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, op->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, op);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, op);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, op->hdrs);
    /* no total limit for "forever"; connecting has no "none" (0 is curl's 300 s default) */
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, curl_ms(timeout, 0));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, curl_ms(connect_timeout, (long)FR_FOREVER));
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* send the path exactly as built (and signed): an S3 key may hold "." segments */
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "flowrun/" FR_VERSION);
    if (ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)op->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, op->body);
        if (strcmp(method, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    if (fr_debug_enabled("http"))
        fr_log("http", "%s %s (%zu bytes)", op->method, op->url, op->body_len);
    if (curl_multi_add_handle(H.multi, e) != CURLM_OK)
        return start_error(L, op, "curl_multi_add_handle failed");
    op->in_multi = true;
    return fr_op_wait(L, op);
}

/* http.stats() -> {idle_handles=} (for tests: the pool is bounded). */
static int l_stats(lua_State *L)
{
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, H.npool);
    lua_setfield(L, -2, "idle_handles");
    return 1;
}

static int luaopen_http(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"request", l_request}, {"stats", l_stats}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}

FR_MODULE("http", luaopen_http)
