/*
 * httpd.c — an HTTP server on the loop, module "httpd.core"; lua/httpd.lua (module "httpd") is
 * its Lua half. Mechanism only: each request is handed to Lua whole (method, path, query,
 * headers, body), answered whole or streamed; routes, auth and JSON shapes are Lua policy.
 *
 * The library is H2O 2.2 as Debian builds it on libuv (libh2o-dev), not http-parser over
 * uv_tcp: H2O is a whole server (HTTP/1.1 keep-alive and pipelining, chunked request bodies,
 * 100-continue, request-body limit with its 413, chunked responses with back-pressure through
 * its generator's proceed callback, TLS through OpenSSL and HTTP/2 over ALPN, graceful
 * shutdown with GOAWAY) that runs on our own uv_loop_t. http-parser (archived upstream in
 * favour of llhttp) only parses; the connection state machine, response framing, timeouts and
 * TLS would all have been ours to write. What H2O 2.2 lacks is added here, around it: one
 * timeout covers both idle keep-alive and request reading (req_timeout), so a request that
 * arrives slowly (slowloris) is cut by our tick at header_timeout from its first byte; the
 * header limit is fixed at ~400 KB and answered 400, so we answer 431 past header_bytes (and
 * cut a connection whose unfinished headers pass it); there is no connection limit, so past
 * max_connections libuv keeps the next connection in the listen backlog; and no write timeout,
 * so a response that makes no progress for idle_timeout has its connection cut. "Cutting" is
 * shutdown(2) on the socket: H2O sees an ordinary end of stream or write error on its own
 * socket and closes the connection through its own paths (we never free its objects). One H2O
 * 2.2 bug is worked around: it ignores uv_write's result, so after a reset a TLS or HTTP/2
 * socket could wait forever for a write libuv refused (see rescue).
 *
 * Flow of a request. H2O parses it and calls on_req (inside uv_run): we wrap it in an hreq_t,
 * queue it on its server and complete the op of a task waiting in accept (no Lua call). That
 * task's continuation pops the request and builds the Lua object. respond/start/write/finish
 * call H2O from the task (outside uv_run). H2O tells us a request is gone (response written,
 * client gone, stream reset) through a pool-allocated anchor whose dispose callback clears
 * hreq->req: no pointer into H2O outlives its request.
 *
 *   core.listen{host=, port=, tls={cert=, key=}, limits={...}} -> server | nil, err
 *   server:accept() -> request | nil (closed) | false (woken, nothing left: call again)   waits
 *   server:close{grace=} -> true                                                         waits
 *   request:respond(status, headers, body) / :start(status, headers) -> true | nil, err
 *   request:write(chunk) -> true | nil, err   waits while the previous chunk is in flight
 *   request:finish() -> true | nil, err; request:close() (also __gc, __close)
 * Errors: httpd.listen (bind), httpd.tls (certificate or key), http.closed (the client went
 * away, stopped reading, or the server is closing).
 *
 * Ownership: server_t is malloc'd; its userdata points to it; it is freed once the userdata
 * is gone, its H2O context disposed and its uv handles closed (maybe_free). The H2O context,
 * globalconf and SSL_CTX belong to server_t. conn_t (our uv_tcp_t, wrapped by H2O's socket) is
 * freed in the socket's close callback. hreq_t is freed once both H2O's request (anchor) and
 * the Lua userdata have let go. Response bytes are copied (h2o_send_inline copies into the
 * request's pool; streamed chunks into hreq_t buffers kept until H2O's proceed).
 */
#define _GNU_SOURCE /* memmem */
#include "flowrun.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <h2o.h>

#define SERVER_MT "flowrun.httpd.server"
#define REQUEST_MT "flowrun.httpd.request"

/* ---- limits ---------------------------------------------------------------------------------
 * Every limit the server enforces, in one place (as Redis's networking.c states its own).
 * listen{limits = {...}} overrides any of them; httpd.limits lists the defaults. */
typedef struct {
    /* Request line and headers, in bytes. Larger: 431, connection closed. A connection whose
     * headers pass it before they are complete is cut (H2O would buffer up to ~400 KB). */
    lua_Integer header_bytes;
    /* Request body, in bytes. Larger: 413, connection closed. A body up to twice this size is
     * read (and dropped) first, so the client, still sending, gets the 413 rather than a reset
     * (H2O 2.2 closes without lingering); a larger Content-Length is refused at once by H2O. */
    lua_Integer body_bytes;
    /* Seconds from a request's first byte until all of it (headers and body) has arrived, and
     * for a TLS handshake. Slower: the connection is cut (slowloris). */
    double header_timeout;
    /* Seconds a keep-alive connection may wait for its next request, and a response may make
     * no progress because the client does not read. Longer: the connection is cut. */
    double idle_timeout;
    /* Open connections. More wait in the listen backlog (unanswered) until one closes. */
    lua_Integer max_connections;
} limits_t;

static const limits_t default_limits = {
    .header_bytes = 16384,
    .body_bytes = 1 << 20,
    .header_timeout = 10,
    .idle_timeout = 60,
    .max_connections = 1024,
};

#define DEFAULT_GRACE 5.0  /* close{grace=}: seconds in-flight requests may take to finish */
#define LISTEN_BACKLOG 511 /* as nginx */
#define PIECE (64 * 1024)  /* respond(): larger bodies go out in pieces, so progress is seen */

/* ---- types ----------------------------------------------------------------------------------- */
typedef struct server server_t;
typedef struct conn conn_t;
typedef struct hreq hreq_t;
typedef struct accept_op accept_op_t;
typedef struct write_op write_op_t;
typedef struct close_op close_op_t;

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

struct conn {
    uv_tcp_t tcp; /* first: H2O's close callback gets &tcp */
    server_t *srv;
    h2o_socket_t *sock; /* H2O's; valid while !uv_is_closing(&tcp) */
    conn_t *prev, *next;
    int fd;
    int active;           /* its requests H2O handed us and has not disposed of */
    double partial_since; /* when bytes of an unfinished request were first seen (0: none) */
    bool cut;             /* shut down: H2O is closing it */
    h2o_socket_cb stuck;  /* H2O's write callback seen orphaned at the last tick (see rescue) */
};

enum { R_NEW, R_STREAMING, R_DONE };

struct hreq {
    h2o_generator_t gen; /* first: proceed gets &gen */
    h2o_req_t *req;      /* NULL once H2O disposed of the request */
    server_t *srv;       /* NULL once H2O disposed of the request */
    conn_t *conn;
    hreq_t *prev, *next; /* srv->reqs: every request H2O still holds */
    hreq_t *qnext;       /* srv->queue: not yet accepted */
    bool queued, owned, head;
    int state;
    bool inflight;      /* an h2o_send waits for proceed */
    int ending;         /* 0, or 1 + the last send state owed at the next proceed */
    bool ended;         /* the server ended the response (closing): writes fail */
    bool whole;         /* respond() with a large body, sent piecewise from out */
    size_t off;         /* whole: bytes of out already handed to H2O */
    buf_t out;          /* bytes H2O is sending (kept until proceed or disposal) */
    buf_t pending;      /* bytes written while out is in flight */
    write_op_t *wop;    /* the task waiting until pending is handed to H2O */
    const char *why;    /* why the response cannot go on (NULL: the client went away) */
    double progress_at; /* last progress of the response being sent */
};

enum { SV_OPEN, SV_CLOSING, SV_DRAINING, SV_DONE };

struct server {
    h2o_globalconf_t conf;
    h2o_context_t ctx;
    h2o_accept_ctx_t actx;
    SSL_CTX *ssl;
    uv_tcp_t listener;
    uv_timer_t tick, grace;
    int handles; /* of listener, tick, grace: not yet closed */
    limits_t lim;
    char host[64];
    int port;
    int state;
    bool ctx_live; /* the H2O context is initialised and not yet disposed */
    bool deferred; /* a connection waits in libuv because of max_connections */
    bool owned;    /* the Lua userdata is alive */
    conn_t *conns;
    int nconns;
    hreq_t *reqs;
    int nreqs;
    hreq_t *qhead, *qtail;
    int nqueued;
    accept_op_t *waiters, *waiters_tail;
    close_op_t *close_op;
    server_t *next_all;
};

typedef struct {
    h2o_handler_t super;
    server_t *srv;
} handler_t;

typedef struct {
    server_t *s;
} server_ud_t;

typedef struct {
    hreq_t *r;
} request_ud_t;

static server_t *all_servers;
static conn_t **by_fd; /* the connection of each socket, to find a request's connection */
static size_t n_by_fd;
static bool hook_registered;

static double mono(void)
{
    return (double)uv_hrtime() / 1e9;
}

static void buf_free(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static bool buf_add(buf_t *b, const char *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return true;
}

/* ---- connections ----------------------------------------------------------------------------- */

/* End a connection through H2O's own paths: after shutdown(2) its reads see the end of the
 * stream and its writes fail, and H2O closes the socket (our on_conn_close follows). */
static void cut(conn_t *c, const char *why)
{
    if (!c || c->cut || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    c->cut = true;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        shutdown(fd, SHUT_RDWR);
    if (fr_debug_enabled("http"))
        fr_log("http", "httpd :%d: connection cut: %s", c->srv->port, why);
}

static bool set_by_fd(int fd, conn_t *c)
{
    if (fd < 0)
        return false;
    if ((size_t)fd >= n_by_fd) {
        size_t n = n_by_fd ? n_by_fd : 256;
        while (n <= (size_t)fd)
            n *= 2;
        conn_t **p = realloc(by_fd, n * sizeof *p);
        if (!p)
            return false;
        memset(p + n_by_fd, 0, (n - n_by_fd) * sizeof *p);
        by_fd = p;
        n_by_fd = n;
    }
    by_fd[fd] = c;
    return true;
}

static conn_t *conn_of(h2o_req_t *req)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    int fd = sock ? h2o_socket_get_fd(sock) : -1;
    return fd >= 0 && (size_t)fd < n_by_fd ? by_fd[fd] : NULL;
}

static bool is_h2(conn_t *c)
{
    if (!c->sock->ssl)
        return false;
    h2o_iovec_t p = h2o_socket_ssl_get_selected_protocol(c->sock);
    return p.len == 2 && memcmp(p.base, "h2", 2) == 0;
}

static void accept_one(server_t *s);
static void maybe_free(server_t *s);

static void on_conn_close(uv_handle_t *h)
{
    conn_t *c = (conn_t *)h;
    server_t *s = c->srv;
    if (c->fd >= 0 && (size_t)c->fd < n_by_fd && by_fd[c->fd] == c)
        by_fd[c->fd] = NULL;
    if (c->active > 0) /* H2O disposes of requests before their socket: never expected */
        for (hreq_t *r = s->reqs; r; r = r->next)
            if (r->conn == c)
                r->conn = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    free(c);
    if (s->deferred && s->state == SV_OPEN) {
        s->deferred = false;
        accept_one(s);
    }
    if (s->state == SV_DRAINING && s->nconns == 0 && s->close_op)
        fr_op_complete(s->close_op);
}

static void accept_one(server_t *s)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        s->deferred = true; /* stays in libuv; tried again when a connection closes */
        return;
    }
    uv_tcp_init(fr_loop(), &c->tcp);
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    uv_os_fd_t fd = -1;
    uv_fileno((uv_handle_t *)&c->tcp, &fd);
    c->fd = fd;
    c->srv = s;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    set_by_fd(fd, c);
    uv_tcp_nodelay(&c->tcp, 1);
    c->sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, on_conn_close);
    h2o_accept(&s->actx, c->sock);
}

static void on_connection(uv_stream_t *l, int status)
{
    server_t *s = l->data;
    if (status < 0) {
        if (fr_debug_enabled("http"))
            fr_log("http", "httpd :%d: accept: %s", s->port, uv_strerror(status));
        return;
    }
    if (s->state != SV_OPEN)
        return;
    if (s->nconns >= s->lim.max_connections) {
        /* not accepted: libuv stops reading the listener until uv_accept takes this one */
        s->deferred = true;
        return;
    }
    accept_one(s);
}

/* ---- requests: H2O's side -------------------------------------------------------------------- */

struct accept_op {
    fr_op_t base;
    server_t *srv;
    accept_op_t *prev, *next;
    bool listed, woken, delivered;
};

struct write_op {
    fr_op_t base;
    hreq_t *r;
    bool closed;
    const char *why;
};

struct close_op {
    fr_op_t base;
    server_t *srv;
};

static void wake_one(server_t *s)
{
    accept_op_t *op = s->waiters;
    if (!op)
        return;
    s->waiters = op->next;
    if (s->waiters)
        s->waiters->prev = NULL;
    else
        s->waiters_tail = NULL;
    op->next = op->prev = NULL;
    op->listed = false;
    op->woken = true;
    fr_op_complete(op);
}

static void unqueue(server_t *s, hreq_t *r)
{
    hreq_t **pp = &s->qhead, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return;
    *pp = r->qnext;
    if (s->qtail == r)
        s->qtail = prev;
    r->qnext = NULL;
    r->queued = false;
    s->nqueued--;
}

static void hreq_free(hreq_t *r)
{
    buf_free(&r->out);
    buf_free(&r->pending);
    free(r);
}

static void wake_writer(hreq_t *r, bool closed)
{
    write_op_t *op = r->wop;
    if (!op)
        return;
    r->wop = NULL;
    op->r = NULL;
    op->closed = closed;
    op->why = r->why;
    fr_op_complete(op);
}

static void on_grace(uv_timer_t *t);
static void on_tick(uv_timer_t *t);

/* The anchor's dispose: H2O is done with the request (response written, connection closed,
 * stream reset). From here on nothing may touch r->req. */
static void on_req_dispose(void *p)
{
    hreq_t *r = *(hreq_t **)p;
    server_t *s = r->srv;
    r->req = NULL;
    r->srv = NULL;
    if (r->conn)
        r->conn->active--;
    r->conn = NULL;
    if (r->queued)
        unqueue(s, r);
    if (r->prev)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    s->nreqs--;
    r->inflight = false;
    wake_writer(r, true);
    if (!r->owned)
        hreq_free(r);
    if (s->state == SV_CLOSING && s->nreqs == 0)
        uv_timer_start(&s->grace, on_grace, 0, 0); /* drain from a clean stack */
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    server_t *s = ((handler_t *)self)->srv;
    size_t hb = req->input.method.len + req->input.path.len + req->input.authority.len + 16;
    for (size_t i = 0; i < req->headers.size; i++)
        hb += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    if (hb > (size_t)s->lim.header_bytes) {
        h2o_send_error_generic(req, 431, "Request Header Fields Too Large",
                               "request header fields too large\n",
                               H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return 0;
    }
    if (req->entity.len > (size_t)s->lim.body_bytes) {
        h2o_send_error_generic(req, 413, "Content Too Large", "request body too large\n",
                               H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return 0;
    }
    hreq_t *r = s->state == SV_OPEN ? calloc(1, sizeof *r) : NULL;
    hreq_t **anchor = r ? h2o_mem_alloc_shared(&req->pool, sizeof *anchor, on_req_dispose) : NULL;
    if (!anchor) {
        free(r);
        h2o_send_error_generic(req, 503, "Service Unavailable", "the server is closing\n",
                               H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
        return 0;
    }
    *anchor = r;
    r->req = req;
    r->srv = s;
    r->conn = conn_of(req);
    if (r->conn)
        r->conn->active++;
    r->head = h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"));
    r->next = s->reqs;
    if (s->reqs)
        s->reqs->prev = r;
    s->reqs = r;
    s->nreqs++;
    r->queued = true;
    if (s->qtail)
        s->qtail->qnext = r;
    else
        s->qhead = r;
    s->qtail = r;
    s->nqueued++;
    wake_one(s);
    return 0;
}

/* Hand the next piece of a large respond() body to H2O. */
static void send_piece(hreq_t *r)
{
    size_t n = r->out.len - r->off < PIECE ? r->out.len - r->off : PIECE;
    h2o_iovec_t v = {r->out.p + r->off, n};
    r->off += n;
    h2o_send_state_t st = r->off == r->out.len ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS;
    r->inflight = st == H2O_SEND_STATE_IN_PROGRESS;
    h2o_send(r->req, &v, 1, st); /* may dispose of the request: r is not touched after */
}

/* H2O wrote what it was given and wants more. Everything r needs is set before h2o_send,
 * which may dispose of the request before it returns. */
static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    hreq_t *r = (hreq_t *)gen;
    (void)req;
    r->inflight = false;
    r->progress_at = mono();
    if (r->whole) {
        send_piece(r);
        return;
    }
    r->out.len = 0;
    if (r->pending.len) {
        buf_t t = r->out;
        r->out = r->pending;
        r->pending = t;
        h2o_send_state_t st =
            r->ending ? (h2o_send_state_t)(r->ending - 1) : H2O_SEND_STATE_IN_PROGRESS;
        r->ending = 0;
        r->inflight = st == H2O_SEND_STATE_IN_PROGRESS;
        wake_writer(r, false);
        h2o_iovec_t v = {r->out.p, r->out.len};
        h2o_send(r->req, &v, 1, st);
    } else if (r->ending) {
        h2o_send_state_t st = (h2o_send_state_t)(r->ending - 1);
        r->ending = 0;
        h2o_send(r->req, NULL, 0, st);
    }
}

/* End a streamed response: FINAL (complete) or ERROR (cut short). */
static void end_stream(hreq_t *r, h2o_send_state_t st)
{
    if (r->inflight) {
        r->ending = 1 + (int)st;
        return;
    }
    h2o_send(r->req, NULL, 0, st); /* may dispose of the request */
}

/* The server is closing: a request nobody answered gets a 503; a stream is ended (FINAL while
 * in-flight requests still have their grace, ERROR once it is over). */
static void end_request(hreq_t *r, h2o_send_state_t st)
{
    if (!r->req)
        return;
    r->why = "the server is closing";
    if (r->queued)
        unqueue(r->srv, r);
    if (r->state == R_NEW) {
        r->state = R_DONE;
        r->ended = true;
        h2o_send_error_generic(r->req, 503, "Service Unavailable", "the server is closing\n",
                               H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
    } else if (r->state == R_STREAMING && !r->ended) {
        r->ended = true;
        r->pending.len = 0;
        wake_writer(r, true);
        r->req->http1_is_persistent = 0;
        end_stream(r, st);
    }
}

/* ---- closing --------------------------------------------------------------------------------- */

static void on_handle_close(uv_handle_t *h)
{
    server_t *s = h->data;
    s->handles--;
    maybe_free(s);
}

/* Phase 2: every request still held is ended, every connection cut; the close op completes
 * when the last connection has closed. */
static void drain(server_t *s)
{
    if (s->state >= SV_DRAINING)
        return;
    s->state = SV_DRAINING;
    uv_timer_stop(&s->grace);
    uv_timer_start(&s->tick, on_tick, 50, 50); /* connections closing: rescue them promptly */
    hreq_t *next;
    for (hreq_t *r = s->reqs; r; r = next) {
        next = r->next;
        end_request(r, H2O_SEND_STATE_ERROR);
    }
    for (conn_t *c = s->conns; c; c = c->next)
        cut(c, "server closed");
    if (s->nconns == 0 && s->close_op)
        fr_op_complete(s->close_op);
}

static void on_grace(uv_timer_t *t)
{
    drain(t->data);
}

/* Phase 1: stop accepting; requests not yet accepted get a 503; streams end; idle connections
 * are cut; in-flight requests have `grace` seconds (then drain). */
static void begin_close(server_t *s, double grace)
{
    if (s->state != SV_OPEN)
        return;
    s->state = SV_CLOSING;
    uv_close((uv_handle_t *)&s->listener, on_handle_close); /* with a deferred connection */
    s->deferred = false;
    h2o_context_request_shutdown(&s->ctx); /* new HTTP/1 responses close; GOAWAY on HTTP/2 */
    while (s->waiters)
        wake_one(s);
    hreq_t *next;
    for (hreq_t *r = s->reqs; r; r = next) {
        next = r->next;
        if (r->queued || r->state == R_STREAMING)
            end_request(r, H2O_SEND_STATE_FINAL);
    }
    for (conn_t *c = s->conns; c; c = c->next)
        if (c->active == 0)
            cut(c, "server closing, idle");
    if (s->nreqs == 0 || grace <= 0)
        drain(s);
    else
        uv_timer_start(&s->grace, on_grace, (uint64_t)(grace * 1000), 0);
}

/* After the last connection: the H2O context goes (its dispose runs the loop once: this is
 * only called from a task or the shutdown hook, never inside uv_run), then our handles. */
static void finish_close(server_t *s)
{
    if (s->state != SV_DRAINING || s->nconns > 0 || !s->ctx_live)
        return;
    s->state = SV_DONE;
    uv_timer_stop(&s->tick);
    uv_timer_stop(&s->grace);
    /* request_shutdown left HTTP/2's GOAWAY timer armed even with no connection left; the
     * context's timeouts must be empty when it goes */
    h2o_timeout_unlink(&s->ctx.http2._graceful_shutdown_timeout);
    h2o_context_dispose(&s->ctx);
    h2o_config_dispose(&s->conf);
    s->ctx_live = false;
    if (s->ssl)
        SSL_CTX_free(s->ssl);
    s->ssl = NULL;
    uv_close((uv_handle_t *)&s->tick, on_handle_close);
    uv_close((uv_handle_t *)&s->grace, on_handle_close);
}

static void maybe_free(server_t *s)
{
    if (s->owned || s->ctx_live || s->handles > 0 || s->state != SV_DONE)
        return;
    for (server_t **pp = &all_servers; *pp; pp = &(*pp)->next_all)
        if (*pp == s) {
            *pp = s->next_all;
            break;
        }
    free(s);
}

/* Servers closed without a waiting close (gc, __close, a cancelled close) are finished here,
 * from the next httpd call or the shutdown hook. */
static void reap(void)
{
    server_t *next;
    for (server_t *s = all_servers; s; s = next) {
        next = s->next_all;
        if (!s->close_op)
            finish_close(s);
    }
}

static void abort_server(server_t *s)
{
    begin_close(s, 0);
    drain(s);
}

static void unref_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    uv_unref(h);
}

static void httpd_shutdown(void)
{
    /* the Lua state is gone: no task waits on anything here any more */
    for (server_t *s = all_servers; s; s = s->next_all) {
        s->waiters = s->waiters_tail = NULL;
        s->close_op = NULL;
        for (hreq_t *r = s->reqs; r; r = r->next)
            r->wop = NULL;
        abort_server(s);
    }
    /* let H2O see the cut sockets and close them (up to 2 s) */
    for (int i = 0; i < 2000; i++) {
        int live = 0;
        for (server_t *s = all_servers; s; s = s->next_all)
            live += s->nconns;
        if (live == 0)
            break;
        uv_run(fr_loop(), UV_RUN_NOWAIT);
        usleep(1000);
    }
    int left = 0;
    for (server_t *s = all_servers; s; s = s->next_all) {
        s->close_op = NULL;
        finish_close(s);
        if (s->state != SV_DONE)
            left += s->nconns;
    }
    /* the handles' close callbacks (the loop's last runs) free the servers. Connections that
     * still did not close would keep the loop, and so the process, alive: let them go */
    if (left > 0) {
        fprintf(stderr, "flowrun: warning: httpd: %d connection(s) did not close at exit\n", left);
        uv_walk(fr_loop(), unref_walk, NULL);
    }
}

/* H2O 2.2 ignores what uv_write returns. After a read error (the peer reset the connection)
 * libuv marks the stream unwritable and fails the next uv_write at once, without a callback:
 * H2O then waits forever for that write (an HTTP/2 connection closing, a TLS close_notify),
 * and the socket is never closed. A socket whose write callback is still armed while libuv has
 * nothing queued and the stream is unwritable, at two ticks in a row (a real completion is
 * delivered within one loop turn), gets its write completed with an error, as libuv would have
 * done; H2O then goes on closing it. */
static void rescue(conn_t *c)
{
    uv_stream_t *st = (uv_stream_t *)&c->tcp;
    h2o_socket_cb cb = c->sock->_cb.write;
    if (!cb || uv_is_writable(st) || st->write_queue_size > 0) {
        c->stuck = NULL;
        return;
    }
    if (c->stuck != cb) {
        c->stuck = cb;
        return;
    }
    c->stuck = NULL;
    if (fr_debug_enabled("http"))
        fr_log("http", "httpd :%d: a write H2O waits for was refused by libuv: completed as failed",
               c->srv->port);
    c->sock->_cb.write = NULL;
    cb(c->sock, h2o_socket_error_io);
}

/* The tick: the timeouts H2O 2.2 does not have (see the header), and rescue. */
static void on_tick(uv_timer_t *t)
{
    server_t *s = t->data;
    double now = mono();
    conn_t *next;
    for (conn_t *c = s->conns; c; c = next) {
        next = c->next;
        if (uv_is_closing((uv_handle_t *)&c->tcp))
            continue;
        rescue(c); /* may close c (H2O's close is a uv_close: c stays valid this turn) */
        if (uv_is_closing((uv_handle_t *)&c->tcp))
            continue;
        size_t in = c->sock->input ? c->sock->input->size : 0;
        if (c->active > 0 || in == 0) {
            c->partial_since = 0;
            continue;
        }
        if (c->partial_since == 0)
            c->partial_since = now;
        if (now - c->partial_since >= s->lim.header_timeout) {
            cut(c, "request not complete within header_timeout");
            continue;
        }
        size_t hl = (size_t)s->lim.header_bytes;
        if (in > hl && !is_h2(c) &&
            !memmem(c->sock->input->bytes, in < hl + 4 ? in : hl + 4, "\r\n\r\n", 4))
            cut(c, "headers larger than header_bytes");
    }
    for (hreq_t *r = s->reqs; r; r = r->next)
        if (r->conn && (r->inflight || r->state == R_DONE) &&
            now - r->progress_at >= s->lim.idle_timeout) {
            r->why = "the client stopped reading";
            cut(r->conn, "response made no progress within idle_timeout");
        }
}

/* ---- Lua: the server ------------------------------------------------------------------------- */

static server_t *check_server(lua_State *L)
{
    server_ud_t *u = luaL_checkudata(L, 1, SERVER_MT);
    if (!u->s)
        luaL_error(L, "httpd: the server was never started");
    return u->s;
}

static void push_closed(lua_State *L, const char *why)
{
    lua_pushnil(L);
    fr_error_push(L, "http.closed", why ? why : "the client closed the connection", false);
}

static void push_request(lua_State *L, server_t *s);

static int accept_results(lua_State *L, fr_op_t *o)
{
    accept_op_t *op = (accept_op_t *)o;
    server_t *s = op->srv;
    op->delivered = true;
    if (!s->qhead) {
        if (s->state == SV_OPEN)
            lua_pushboolean(L, 0);
        else
            lua_pushnil(L);
        return 1;
    }
    push_request(L, s);
    return 1;
}

static bool accept_cancel(fr_op_t *o)
{
    accept_op_t *op = (accept_op_t *)o;
    server_t *s = op->srv;
    if (op->listed) {
        if (op->prev)
            op->prev->next = op->next;
        else
            s->waiters = op->next;
        if (op->next)
            op->next->prev = op->prev;
        else
            s->waiters_tail = op->prev;
        op->listed = false;
    }
    return true;
}

static void accept_free(fr_op_t *o)
{
    accept_op_t *op = (accept_op_t *)o;
    accept_cancel(o);
    /* woken for a request it never took (its task was cancelled): wake the next waiter */
    if (op->woken && !op->delivered && op->srv->qhead)
        wake_one(op->srv);
}

static const fr_op_vt_t accept_vt = {"httpd.accept", accept_results, accept_cancel, accept_free,
                                     true};

/* server:accept() -> request | nil (the server is closed) | false (woken but another task took
 * the request: call again; httpd.lua loops). Waits when nothing is queued. */
static int l_accept(lua_State *L)
{
    server_t *s = check_server(L);
    reap();
    if (s->qhead) {
        push_request(L, s);
        return 1;
    }
    if (s->state != SV_OPEN) {
        lua_pushnil(L);
        return 1;
    }
    accept_op_t *op = fr_op_new(L, sizeof *op, &accept_vt);
    op->srv = s;
    op->listed = true;
    op->prev = s->waiters_tail;
    if (s->waiters_tail)
        s->waiters_tail->next = op;
    else
        s->waiters = op;
    s->waiters_tail = op;
    return fr_op_wait(L, op);
}

static int close_results(lua_State *L, fr_op_t *o)
{
    server_t *s = ((close_op_t *)o)->srv;
    s->close_op = NULL;
    finish_close(s);
    lua_pushboolean(L, 1);
    return 1;
}

static bool close_cancel(fr_op_t *o)
{
    server_t *s = ((close_op_t *)o)->srv;
    s->close_op = NULL;
    drain(s); /* no more grace: the rest finishes in the background (reap) */
    return true;
}

static void close_free(fr_op_t *o)
{
    server_t *s = ((close_op_t *)o)->srv;
    if (s->close_op == (close_op_t *)o)
        s->close_op = NULL;
}

static const fr_op_vt_t close_vt = {"httpd.close", close_results, close_cancel, close_free, true};

/* server:close{grace = 5} -> true. Waits: stops accepting, answers 503 to requests not yet
 * accepted, ends streamed responses, lets in-flight requests finish for `grace` seconds, then
 * answers 503 to those still unanswered and closes every connection. A second close, or a
 * close of a closed server, returns at once. */
static int l_close(lua_State *L)
{
    server_t *s = check_server(L);
    double grace = DEFAULT_GRACE;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "grace");
        if (!lua_isnil(L, -1)) {
            if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
                return luaL_error(L, "httpd: close{grace=}: a number of seconds >= 0 expected");
            grace = lua_tonumber(L, -1);
        }
        lua_pop(L, 1);
    } else if (!lua_isnoneornil(L, 2)) {
        return luaL_argerror(L, 2, "table or nil expected");
    }
    reap();
    if (s->state != SV_OPEN) {
        lua_pushboolean(L, 1);
        return 1;
    }
    close_op_t *op = fr_op_new(L, sizeof *op, &close_vt);
    op->srv = s;
    s->close_op = op;
    begin_close(s, grace); /* completes op at once when nothing is left */
    return fr_op_wait(L, op);
}

/* __gc and __close (upvalue: true for __gc): no waiting is possible there, so an abrupt close;
 * the H2O context goes later (reap). */
static int l_server_gc(lua_State *L)
{
    server_ud_t *u = luaL_checkudata(L, 1, SERVER_MT);
    server_t *s = u->s;
    if (!s)
        return 0;
    abort_server(s);
    if (lua_toboolean(L, lua_upvalueindex(1))) {
        u->s = NULL;
        s->owned = false;
        maybe_free(s);
    }
    return 0;
}

/* server:stats() -> {connections=, requests=, queued=, state=} (tests, monitoring) */
static int l_stats(lua_State *L)
{
    server_t *s = check_server(L);
    static const char *const states[] = {"open", "closing", "draining", "closed"};
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, s->nconns);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, s->nreqs);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, s->nqueued);
    lua_setfield(L, -2, "queued");
    lua_pushstring(L, states[s->state]);
    lua_setfield(L, -2, "state");
    return 1;
}

static int l_server_index(lua_State *L)
{
    server_ud_t *u = luaL_checkudata(L, 1, SERVER_MT);
    const char *k = lua_tostring(L, 2);
    if (k && u->s && !strcmp(k, "port")) {
        lua_pushinteger(L, u->s->port);
        return 1;
    }
    if (k && u->s && !strcmp(k, "host")) {
        lua_pushstring(L, u->s->host);
        return 1;
    }
    if (k && u->s && !strcmp(k, "tls")) {
        lua_pushboolean(L, u->s->actx.ssl_ctx != NULL);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static int l_server_tostring(lua_State *L)
{
    server_ud_t *u = luaL_checkudata(L, 1, SERVER_MT);
    if (!u->s)
        lua_pushliteral(L, "httpd.server (not started)");
    else
        lua_pushfstring(L, "httpd.server (%s:%d, %s)", u->s->host, u->s->port,
                        u->s->state == SV_OPEN ? "open" : "closed");
    return 1;
}

/* ---- Lua: listen ----------------------------------------------------------------------------- */

static double opt_limit(lua_State *L, int t, const char *name, double def, bool integer)
{
    lua_getfield(L, t, name);
    double v = def;
    if (!lua_isnil(L, -1)) {
        if (integer ? !lua_isinteger(L, -1) : !lua_isnumber(L, -1))
            luaL_error(L, "httpd.listen: limits.%s must be %s", name,
                       integer ? "an integer" : "a number of seconds");
        v = lua_tonumber(L, -1);
        if (v <= 0)
            luaL_error(L, "httpd.listen: limits.%s must be positive", name);
    }
    lua_pop(L, 1);
    return v;
}

static void read_limits(lua_State *L, limits_t *lim)
{
    *lim = default_limits;
    lua_getfield(L, 1, "limits");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "httpd.listen: limits must be a table");
    int t = lua_gettop(L);
    static const char *const known[] = {"header_bytes", "body_bytes",      "header_timeout",
                                        "idle_timeout", "max_connections", NULL};
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int i = 0;
        while (k && known[i] && strcmp(known[i], k))
            i++;
        if (!k || !known[i])
            luaL_error(L,
                       "httpd.listen: unknown limit %s (known: header_bytes, body_bytes, "
                       "header_timeout, idle_timeout, max_connections)",
                       k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
    lim->header_bytes =
        (lua_Integer)opt_limit(L, t, "header_bytes", (double)lim->header_bytes, true);
    lim->body_bytes = (lua_Integer)opt_limit(L, t, "body_bytes", (double)lim->body_bytes, true);
    lim->header_timeout = opt_limit(L, t, "header_timeout", lim->header_timeout, false);
    lim->idle_timeout = opt_limit(L, t, "idle_timeout", lim->idle_timeout, false);
    lim->max_connections =
        (lua_Integer)opt_limit(L, t, "max_connections", (double)lim->max_connections, true);
    lua_pop(L, 1);
}

static void push_limits(lua_State *L, const limits_t *lim)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, lim->header_bytes);
    lua_setfield(L, -2, "header_bytes");
    lua_pushinteger(L, lim->body_bytes);
    lua_setfield(L, -2, "body_bytes");
    lua_pushnumber(L, lim->header_timeout);
    lua_setfield(L, -2, "header_timeout");
    lua_pushnumber(L, lim->idle_timeout);
    lua_setfield(L, -2, "idle_timeout");
    lua_pushinteger(L, lim->max_connections);
    lua_setfield(L, -2, "max_connections");
}

/* The certificate chain and key as OpenSSL reads them; NULL and a message on failure (paths
 * and OpenSSL's reason only: nothing of the key). */
static SSL_CTX *tls_context(const char *cert, const char *key, char *msg, size_t msglen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    const char *what = "cannot create a TLS context", *file = "";
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    what = "cannot load the certificate";
    file = cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        goto fail;
    what = "cannot load the private key";
    file = key;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        goto fail;
    what = "the private key does not match the certificate";
    if (SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols); /* h2, http/1.1 */
    ERR_clear_error();
    return ctx;
fail:;
    char reason[256] = "";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    snprintf(msg, msglen, "%s%s%s%s%s", what, *file ? " " : "", file, *reason ? ": " : "", reason);
    if (ctx)
        SSL_CTX_free(ctx);
    return NULL;
}

static void init_h2o(server_t *s)
{
    h2o_config_init(&s->conf);
    s->conf.server_name = h2o_iovec_init(H2O_STRLIT("flowrun"));
    s->conf.max_request_entity_size = 2 * (size_t)s->lim.body_bytes;
    s->conf.handshake_timeout = (uint64_t)(s->lim.header_timeout * 1000);
    s->conf.http1.req_timeout = (uint64_t)(s->lim.idle_timeout * 1000);
    s->conf.http1.upgrade_to_http2 = 0; /* HTTP/2 only over TLS (ALPN) */
    s->conf.http2.idle_timeout = (uint64_t)(s->lim.idle_timeout * 1000);
    h2o_hostconf_t *host =
        h2o_config_register_host(&s->conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    handler_t *h = (handler_t *)h2o_create_handler(path, sizeof *h);
    h->super.on_req = on_req;
    h->srv = s;
    h2o_context_init(&s->ctx, fr_loop(), &s->conf);
    s->ctx_live = true;
    s->actx.ctx = &s->ctx;
    s->actx.hosts = s->conf.hosts;
    s->actx.ssl_ctx = s->ssl;
}

/* core.listen{host = "127.0.0.1", port = 0, tls = {cert =, key =}, limits = {...}}
 *   -> server | nil, err (httpd.listen: cannot bind; httpd.tls: certificate or key). Misuse
 * (a bad option) raises. Port 0 picks a free port: server.port tells which. */
static int l_listen(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    reap();
    lua_getfield(L, 1, "host");
    const char *host = luaL_optstring(L, -1, "127.0.0.1");
    lua_getfield(L, 1, "port");
    lua_Integer port = lua_isnil(L, -1) ? 0 : lua_isinteger(L, -1) ? lua_tointeger(L, -1) : -1;
    if (port < 0 || port > 65535)
        return luaL_error(L, "httpd.listen: port must be an integer from 0 to 65535");
    struct sockaddr_storage addr;
    if (strlen(host) >= 64 ||
        (strchr(host, ':') ? uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&addr)
                           : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&addr)) != 0)
        return luaL_error(L, "httpd.listen: host must be a numeric IPv4 or IPv6 address, got %s",
                          host);
    const char *cert = NULL, *key = NULL;
    lua_getfield(L, 1, "tls");
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            return luaL_error(L, "httpd.listen: tls must be a table {cert = file, key = file}");
        lua_getfield(L, -1, "cert");
        lua_getfield(L, -2, "key");
        cert = lua_tostring(L, -2);
        key = lua_tostring(L, -1);
        if (!cert || !key)
            return luaL_error(L, "httpd.listen: tls needs cert and key (PEM file names)");
    }
    limits_t lim;
    read_limits(L, &lim);

    server_ud_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->s = NULL;
    luaL_setmetatable(L, SERVER_MT);
    int ud = lua_gettop(L);

    SSL_CTX *ssl = NULL;
    if (cert) {
        char msg[512];
        ssl = tls_context(cert, key, msg, sizeof msg);
        if (!ssl) {
            lua_pushnil(L);
            fr_error_push(L, "httpd.tls", msg, false);
            return 2;
        }
    }
    server_t *s = calloc(1, sizeof *s);
    if (!s) {
        if (ssl)
            SSL_CTX_free(ssl);
        return luaL_error(L, "httpd.listen: out of memory");
    }
    s->ssl = ssl;
    s->lim = lim;
    snprintf(s->host, sizeof s->host, "%s", host);
    s->next_all = all_servers;
    all_servers = s;
    uv_tcp_init(fr_loop(), &s->listener);
    s->listener.data = s;
    s->handles = 1;
    int rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        s->state = SV_DONE;
        if (s->ssl)
            SSL_CTX_free(s->ssl);
        s->ssl = NULL;
        uv_close((uv_handle_t *)&s->listener, on_handle_close); /* frees s */
        lua_pushnil(L);
        lua_pushfstring(L, "cannot listen on %s:%d: %s", host, (int)port, uv_strerror(rc));
        fr_error_push(L, "httpd.listen", lua_tostring(L, -1), rc == UV_EADDRINUSE);
        lua_remove(L, -2);
        return 2;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    init_h2o(s);
    uv_timer_init(fr_loop(), &s->tick);
    uv_timer_init(fr_loop(), &s->grace);
    s->tick.data = s->grace.data = s;
    s->handles = 3;
    double period = lim.header_timeout < lim.idle_timeout ? lim.header_timeout : lim.idle_timeout;
    period = period / 4 < 0.05 ? 0.05 : period / 4 > 1 ? 1 : period / 4;
    uv_timer_start(&s->tick, on_tick, (uint64_t)(period * 1000), (uint64_t)(period * 1000));
    uv_unref((uv_handle_t *)&s->tick); /* the listener and connections keep the loop alive */
    s->owned = true;
    u->s = s;
    if (!hook_registered) {
        hook_registered = true;
        fr_at_shutdown(httpd_shutdown);
    }
    if (fr_debug_enabled("http"))
        fr_log("http", "httpd listening on %s:%d%s", s->host, s->port, ssl ? " (TLS)" : "");
    lua_pushvalue(L, ud);
    return 1;
}

/* ---- Lua: requests --------------------------------------------------------------------------- */

static hreq_t *check_request(lua_State *L)
{
    request_ud_t *u = luaL_checkudata(L, 1, REQUEST_MT);
    if (!u->r)
        luaL_error(L, "httpd: the request is closed");
    return u->r;
}

static void push_remote(lua_State *L, h2o_req_t *req)
{
    struct sockaddr_storage ss;
    socklen_t n = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    char ip[64] = "?";
    int port = 0;
    if (n && ss.ss_family == AF_INET) {
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        lua_pushfstring(L, "%s:%d", ip, port);
    } else if (n && ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        lua_pushfstring(L, "[%s]:%d", ip, port);
    } else {
        lua_pushliteral(L, "?");
    }
}

/* Pops the server's first queued request into a new request object. What may raise (memory)
 * comes before the hand-over or after it, never between the pop and the object owning it. */
static void push_request(lua_State *L, server_t *s)
{
    request_ud_t *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->r = NULL;
    luaL_setmetatable(L, REQUEST_MT);
    lua_createtable(L, 0, 8);
    hreq_t *r = s->qhead;
    s->qhead = r->qnext;
    if (!s->qhead)
        s->qtail = NULL;
    s->nqueued--;
    r->qnext = NULL;
    r->queued = false;
    r->owned = true;
    u->r = r;
    h2o_req_t *req = r->req;
    lua_pushlstring(L, req->input.method.base, req->input.method.len);
    lua_setfield(L, -2, "method");
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    lua_pushlstring(L, req->path.base, plen);
    lua_setfield(L, -2, "path");
    if (req->query_at != SIZE_MAX) {
        lua_pushlstring(L, req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
        lua_setfield(L, -2, "query");
    }
    lua_createtable(L, 0, (int)req->headers.size + 1);
    for (size_t i = 0; i < req->headers.size; i++) {
        h2o_header_t *h = req->headers.entries + i;
        lua_pushlstring(L, h->name->base, h->name->len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated: joined as http.request does */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value.base, h->value.len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value.base, h->value.len);
        }
        lua_rawset(L, -3);
    }
    if (req->input.authority.base) { /* H2O moves Host (and HTTP/2's :authority) here */
        lua_pushlstring(L, req->input.authority.base, req->input.authority.len);
        lua_setfield(L, -2, "host");
    }
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, req->entity.base ? req->entity.base : "", req->entity.len);
    lua_setfield(L, -2, "body");
    push_remote(L, req);
    lua_setfield(L, -2, "remote");
    lua_pushstring(L, req->version >= 0x200 ? "2" : req->version == 0x100 ? "1.0" : "1.1");
    lua_setfield(L, -2, "version");
    lua_setiuservalue(L, -2, 1);
}

static const char *reason_of(int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {415, "Unsupported Media Type"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return status < 300   ? "OK"
           : status < 400 ? "Redirect"
           : status < 500 ? "Client Error"
                          : "Server Error";
}

/* --debug http: one line per answer (the path without its query, which may carry tokens) */
static void log_answer(h2o_req_t *req, int status, const char *how)
{
    if (!fr_debug_enabled("http"))
        return;
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    fr_log("http", "httpd %.*s %.*s -> %d%s", (int)req->input.method.len, req->input.method.base,
           (int)(plen > 200 ? 200 : plen), req->path.base, status, how);
}

static int check_status(lua_State *L, int idx)
{
    lua_Integer st = luaL_checkinteger(L, idx);
    luaL_argcheck(L, st >= 200 && st <= 599, idx, "an HTTP status from 200 to 599 expected");
    return (int)st;
}

static bool token_char(unsigned char c)
{
    return c > 32 && c < 127 && !strchr("()<>@,;:\\\"/[]?={}", c);
}

static void check_header(lua_State *L, const char *name, size_t nlen, const char *value,
                         size_t vlen)
{
    if (nlen == 0)
        luaL_error(L, "httpd: empty header name");
    for (size_t i = 0; i < nlen; i++)
        if (!token_char((unsigned char)name[i]))
            luaL_error(L, "httpd: bad header name '%s'", name);
    for (size_t i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == 0)
            luaL_error(L, "httpd: header %s: a value holds a line break or NUL", name);
    static const char *const framing[] = {"content-length", "transfer-encoding", "connection",
                                          "keep-alive",     "upgrade",           NULL};
    for (int i = 0; framing[i]; i++)
        if (nlen == strlen(framing[i]) && !strncasecmp(name, framing[i], nlen))
            luaL_error(L, "httpd: header %s is the server's to set", name);
}

/* Calls fn(name, value) for each header of the table at idx (nil: none): a map name -> string
 * or number, or an array of {name, value} pairs (for repeated headers). With req NULL only
 * checks (raising on misuse); with req adds them to the response (cannot raise). */
static void each_header(lua_State *L, int idx, h2o_req_t *req)
{
    if (lua_isnoneornil(L, idx))
        return;
    luaL_argcheck(L, lua_istable(L, idx), idx, "a table of headers expected");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *name, *value;
        size_t nlen, vlen;
        if (lua_type(L, -2) == LUA_TSTRING) {
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "httpd: header %s: a string expected", lua_tostring(L, -2));
            lua_pushvalue(L, -2);
            lua_pushvalue(L, -2);
        } else if (lua_istable(L, -1)) {
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (lua_type(L, -2) != LUA_TSTRING ||
                (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                luaL_error(L, "httpd: headers[%d] must be a {name, value} pair of strings",
                           (int)lua_tointeger(L, -4));
        } else {
            luaL_error(L, "httpd: headers must map names to strings");
        }
        name = lua_tolstring(L, -2, &nlen);
        value = lua_tolstring(L, -1, &vlen); /* a copy on the stack: the key is untouched */
        if (!req) {
            check_header(L, name, nlen, value, vlen);
        } else {
            char *lc = h2o_mem_alloc_pool(&req->pool, nlen);
            for (size_t i = 0; i < nlen; i++)
                lc[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
            h2o_iovec_t orig = h2o_strdup(&req->pool, name, nlen);
            h2o_iovec_t v = h2o_strdup(&req->pool, value, vlen);
            h2o_add_header_by_str(&req->pool, &req->res.headers, lc, nlen, 1, orig.base, v.base,
                                  v.len);
        }
        lua_pop(L, 3);
    }
}

/* request:respond(status, headers, body) -> true | nil, err (http.closed: the client went away
 * or the server is closing; nothing to do). Does not wait. Misuse (a second response, a bad
 * status or header) raises. */
static int l_respond(lua_State *L)
{
    hreq_t *r = check_request(L);
    int status = check_status(L, 2);
    size_t len;
    const char *body = luaL_optlstring(L, 4, "", &len);
    each_header(L, 3, NULL);
    if (r->ended) {
        push_closed(L, r->why);
        return 2;
    }
    if (r->state != R_NEW)
        return luaL_error(L, "httpd: respond: this request was already answered");
    if (!r->req) {
        r->state = R_DONE;
        push_closed(L, r->why);
        return 2;
    }
    h2o_req_t *req = r->req;
    bool whole = len > PIECE && !r->head;
    char *copy = NULL;
    if (whole && !(copy = malloc(len)))
        return luaL_error(L, "httpd: respond: out of memory");
    req->res.status = status;
    req->res.reason = reason_of(status);
    each_header(L, 3, req);
    req->res.content_length = len;
    log_answer(req, status, "");
    r->state = R_DONE;
    r->progress_at = mono();
    if (!whole) {
        h2o_send_inline(req, body, len);
        return lua_pushboolean(L, 1), 1;
    }
    memcpy(copy, body, len);
    r->out.p = copy;
    r->out.len = r->out.cap = len;
    r->whole = true;
    r->gen.proceed = on_proceed;
    h2o_start_response(req, &r->gen);
    send_piece(r);
    lua_pushboolean(L, 1);
    return 1;
}

/* request:start(status, headers) -> true | nil, err. Starts a streamed response (chunked in
 * HTTP/1.1); the headers go out with the first write. Does not wait. */
static int l_start(lua_State *L)
{
    hreq_t *r = check_request(L);
    int status = check_status(L, 2);
    each_header(L, 3, NULL);
    if (r->ended) {
        push_closed(L, r->why);
        return 2;
    }
    if (r->state != R_NEW)
        return luaL_error(L, "httpd: start: this request was already answered");
    if (!r->req) {
        r->state = R_STREAMING;
        r->ended = true;
        push_closed(L, r->why);
        return 2;
    }
    h2o_req_t *req = r->req;
    req->res.status = status;
    req->res.reason = reason_of(status);
    each_header(L, 3, req);
    log_answer(req, status, " (streamed)");
    r->state = R_STREAMING;
    r->progress_at = mono();
    r->gen.proceed = on_proceed;
    h2o_start_response(req, &r->gen);
    lua_pushboolean(L, 1);
    return 1;
}

static int write_results(lua_State *L, fr_op_t *o)
{
    write_op_t *op = (write_op_t *)o;
    if (op->closed) {
        push_closed(L, op->why);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static bool write_cancel(fr_op_t *o)
{
    write_op_t *op = (write_op_t *)o;
    if (op->r) {
        op->r->wop = NULL;
        op->r = NULL;
    }
    return true;
}

static const fr_op_vt_t write_vt = {"httpd.write", write_results, write_cancel, NULL, true};

/* request:write(chunk) -> true | nil, err (http.closed: the client went away or stopped
 * reading, or the server is closing). Hands the chunk to H2O at once when nothing is in flight;
 * otherwise waits until the previous chunk has been written (back-pressure). */
static int l_write(lua_State *L)
{
    hreq_t *r = check_request(L);
    size_t len;
    const char *chunk = luaL_checklstring(L, 2, &len);
    lua_settop(L, 2);
    if (r->state != R_STREAMING)
        return luaL_error(L, "httpd: write: call start first (and not after finish)");
    if (!r->req || r->ended) {
        push_closed(L, r->why);
        return 2;
    }
    if (r->wop)
        return luaL_error(L, "httpd: write: another task is writing this response");
    if (len == 0 || r->head)
        return lua_pushboolean(L, 1), 1;
    if (!r->inflight) {
        r->out.len = 0;
        if (!buf_add(&r->out, chunk, len))
            return luaL_error(L, "httpd: write: out of memory");
        r->inflight = true;
        h2o_iovec_t v = {r->out.p, r->out.len};
        h2o_send(r->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
        return lua_pushboolean(L, 1), 1;
    }
    write_op_t *op = fr_op_new(L, sizeof *op, &write_vt);
    if (!buf_add(&r->pending, chunk, len)) {
        fr_op_discard(op);
        return luaL_error(L, "httpd: write: out of memory");
    }
    op->r = r;
    r->wop = op;
    return fr_op_wait(L, op);
}

/* request:finish() -> true | nil, err. Ends a streamed response (what was written is still
 * delivered). Does not wait. */
static int l_finish(lua_State *L)
{
    hreq_t *r = check_request(L);
    if (r->state != R_STREAMING)
        return luaL_error(L, "httpd: finish: no streamed response to finish");
    if (!r->req || r->ended) {
        r->state = R_DONE;
        push_closed(L, r->why);
        return 2;
    }
    r->state = R_DONE;
    r->progress_at = mono();
    end_stream(r, H2O_SEND_STATE_FINAL);
    lua_pushboolean(L, 1);
    return 1;
}

/* request:close() (also __gc, __close): a request left unanswered gets a 500, a streamed
 * response left unfinished is cut short (the client sees it broken, not complete). */
static int l_req_close(lua_State *L)
{
    request_ud_t *u = luaL_checkudata(L, 1, REQUEST_MT);
    hreq_t *r = u->r;
    if (!r)
        return 0;
    u->r = NULL;
    if (r->wop) /* a task still waits in write (close called from another task) */
        wake_writer(r, true);
    if (r->req && !r->ended) {
        if (r->state == R_NEW) {
            r->state = R_DONE;
            h2o_send_error_generic(r->req, 500, "Internal Server Error",
                                   "the request was not answered\n", 0);
        } else if (r->state == R_STREAMING) {
            r->state = R_DONE;
            r->pending.len = 0;
            r->req->http1_is_persistent = 0;
            end_stream(r, H2O_SEND_STATE_ERROR);
        }
    }
    r->owned = false;
    if (!r->req)
        hreq_free(r);
    return 0;
}

static int l_req_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    lua_getiuservalue(L, 1, 1);
    if (!lua_istable(L, -1))
        return 0;
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int l_req_tostring(lua_State *L)
{
    request_ud_t *u = luaL_checkudata(L, 1, REQUEST_MT);
    lua_getiuservalue(L, 1, 1);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "method");
        lua_getfield(L, -2, "path");
        lua_pushfstring(L, "httpd.request (%s %s%s)", lua_tostring(L, -2), lua_tostring(L, -1),
                        u->r ? "" : ", closed");
    } else {
        lua_pushliteral(L, "httpd.request");
    }
    return 1;
}

static int l_limits(lua_State *L)
{
    push_limits(L, &default_limits);
    return 1;
}

static int luaopen_httpd_core(lua_State *L)
{
    static const luaL_Reg server_methods[] = {
        {"accept", l_accept}, {"close", l_close}, {"stats", l_stats}, {NULL, NULL}};
    luaL_newmetatable(L, SERVER_MT);
    luaL_newlib(L, server_methods);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_server_index, 1);
    lua_setfield(L, -3, "__index");
    lua_pushboolean(L, 1); /* __gc: the userdata goes */
    lua_pushcclosure(L, l_server_gc, 1);
    lua_setfield(L, -3, "__gc");
    lua_pushboolean(L, 0); /* __close: it stays */
    lua_pushcclosure(L, l_server_gc, 1);
    lua_setfield(L, -3, "__close");
    lua_pushcfunction(L, l_server_tostring);
    lua_setfield(L, -3, "__tostring");
    int smethods = lua_gettop(L);

    static const luaL_Reg request_methods[] = {{"respond", l_respond}, {"start", l_start},
                                               {"write", l_write},     {"finish", l_finish},
                                               {"close", l_req_close}, {NULL, NULL}};
    luaL_newmetatable(L, REQUEST_MT);
    luaL_newlib(L, request_methods);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, l_req_index, 1);
    lua_setfield(L, -3, "__index");
    lua_pushcfunction(L, l_req_close);
    lua_setfield(L, -3, "__gc");
    lua_pushcfunction(L, l_req_close);
    lua_setfield(L, -3, "__close");
    lua_pushcfunction(L, l_req_tostring);
    lua_setfield(L, -3, "__tostring");
    int rmethods = lua_gettop(L);

    static const luaL_Reg funcs[] = {{"listen", l_listen}, {"limits", l_limits}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    lua_pushvalue(L, smethods);
    lua_setfield(L, -2, "server_methods");
    lua_pushvalue(L, rmethods);
    lua_setfield(L, -2, "request_methods");
    return 1;
}

FR_MODULE("httpd.core", luaopen_httpd_core)
