/*
 * pg.c — PostgreSQL on the loop: libpq in non-blocking mode driven by one uv_poll per
 * connection. Exposes the Lua module "pg.core"; lua/pg/init.lua (module "pg") adds the policy:
 * transactions, LISTEN helpers, COPY wrappers, the pool.
 *
 * No blocking libpq call is ever made. Connecting: a host name is first resolved with
 * uv_getaddrinfo (libpq would call getaddrinfo itself, blocking) and passed as hostaddr; then
 * PQconnectStartParams + PQconnectPoll, the socket re-read after every poll (libpq moves
 * between addresses). Queries: PQsendQueryParams / PQsendPrepare / PQsendQueryPrepared +
 * PQflush, results read with PQconsumeInput / PQisBusy / PQgetResult when the socket is
 * readable. An idle connection keeps watching its socket (unref'd) so that NOTIFYs are queued
 * and a server that went away is noticed at once.
 *
 * A connection (pgc_t, malloc'd) runs one statement at a time: `cur` is the op driving it,
 * later callers wait in a FIFO queue. In pipeline mode (conn:pipeline(true)) statements are
 * sent at once, each with its own Sync, and complete in order (phead). conn:query prepares
 * each statement once per connection (the statement cache, whose size and "prepare from the
 * n-th run" lua/pg sets), so later runs are Bind/Execute. A parameter only bytea can take (a
 * string that is not valid text) makes its statement Parse, Describe, then Execute: the server
 * says the parameter's type before any byte of it is sent.
 *
 * Values: runtime/pg_values.c converts results (text form) to Lua values and Lua values to
 * parameters; this unit hands it OIDs and bytes.
 *
 * Cancelling a task whose query runs: the op is released at once and the connection "drains"
 * in the background: PQcancel (which opens a connection and blocks: PG 15's libpq has no
 * asynchronous cancel) runs on a libuv worker thread, the results that still come are read and
 * discarded, and only then does the next queued statement start, so a late cancel request can
 * never hit the next query. If the cancel request fails, or the statement has not stopped
 * after cancel_timeout, the connection is closed (broken); a pool replaces it.
 *
 * Ownership: pgc_t is freed when its owner (the Lua userdata, or the connect op before that),
 * its poll handle and drain timer (closed through uv_close), a pending resolve, a PQcancel
 * worker and any wait_notify or COPY-start op have all let go (`refs`). PGconn belongs to pgc_t
 * (PQfinish in conn_close); PGresult belongs to the op that collected it (PQclear in op_free). SQL
 * text and parameters are read from the waiting task's stack (which anchors them) or, for a queued
 * op, from a copy the op owns. Passwords are kept only to scrub them from messages.
 */
#define _GNU_SOURCE /* strcasestr */
#include "flowrun.h"
#include "pg_values.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONN_MT "flowrun.pg.conn"
#define WAITER_MT "flowrun.pg.waiter"

enum { S_CONNECTING, S_READY, S_BROKEN, S_CLOSED };
enum { COPY_NONE, COPY_IN, COPY_OUT };
enum { K_CONNECT, K_QUERY, K_EXEC, K_COPY_START, K_COPY_PUT, K_COPY_END, K_COPY_GET, K_NOTIFY };

typedef struct pgop pgop_t;
typedef struct pgc pgc_t;

typedef struct note {
    char *channel, *payload;
    int pid;
    struct note *next;
} note_t;

/* A statement prepared on one connection: the text and the kinds of its parameters. */
typedef struct stmt {
    struct stmt *next;
    uint32_t hash;
    int id;
    int state; /* ST_SEEN: run unnamed so far; ST_PARSING: Parse sent; ST_READY: prepared */
    int uses;  /* runs while ST_SEEN */
    int nparams;
    char *sig; /* one char per parameter (see sigchar), then the SQL text */
    char *sql;
    Oid *ptypes; /* the parameter types the server said (Describe), once asked; malloc'd */
    int nptypes;
} stmt_t;

#define STMT_BUCKETS 64
enum { ST_SEEN, ST_PARSING, ST_READY };
#define MAX_NOTES 10000

typedef struct pgpoll {
    uv_poll_t h;
    pgc_t *c;
} pgpoll_t;

struct pgc {
    PGconn *pg;
    PGcancel *cancel;
    pgpoll_t *poll;
    int fd;
    int events; /* what the poll handle watches now */
    bool ref;   /* poll handle ref'd (an op waits on this connection) */
    int state;
    int copy;
    bool want_flush;
    bool copy_ended;        /* COPY TO's data is all read; its result is still to collect */
    int copy_id;            /* numbers each COPY, so that only its owner can abort it */
    bool draining;          /* discarding what a cancelled statement still sends */
    int cancel_flight;      /* PQcancel calls running on a worker thread */
    struct pgtimer *dtimer; /* bounds a drain: the connection is closed when it fires */
    double cancel_timeout;  /* seconds (conn:cancel_timeout) */
    int refs;
    bool owned; /* a userdata owns it */
    pgop_t *cur, *qhead, *qtail;
    pgop_t *connect_op;
    pgop_t *waiter; /* wait_notify */
    note_t *nhead, *ntail;
    int nnotes, dropped;
    char *desc;   /* user@host:port/db, never the password */
    char *secret; /* the password, only to scrub messages */
    char *broken_msg;
    struct pgc *prev_all, *next_all;
    stmt_t *stmts[STMT_BUCKETS];
    /* the statement cache: its policy (size, from which use a query is prepared) is lua/pg's,
     * set with conn:statement_cache; 0 statements until then */
    int nstmts, stmt_max, stmt_seq, stmt_evict, prepare_from;
    bool pipe;             /* libpq pipeline mode: statements sent without waiting */
    bool numeric_number;   /* numeric results as Lua numbers instead of exact strings */
    pgop_t *phead, *ptail; /* sent in pipeline mode, results due in this order */
    /* connection options until PQconnectStartParams has them (NULL-terminated) */
    char **okw, **oval;
    int nopts;
};

struct pgop {
    fr_op_t base;
    int kind;
    pgc_t *c;
    pgop_t *next; /* queue link */
    bool queued;
    /* a queued request, copied */
    char *blob;
    const char *sql;
    int nparams;
    const char **vals;
    int *lens;
    int *fmts;
    Oid *types;
    /* outcome */
    PGresult *res;
    char *err;
    const char *errcode;
    bool retryable;
    /* COPY data waiting for room in libpq's buffer */
    char *buf;
    size_t len;
    const char *end_msg;
    bool end_sent;
    bool get_end;   /* the end of COPY TO: results are nil, count */
    stmt_t *stmt;   /* the prepared statement it runs, or NULL */
    bool preparing; /* waiting for the Parse of stmt */
    bool retried;   /* re-prepared once after the server dropped a statement */
    /* A parameter that only bytea can take (a string that is not valid text) waits for the
     * server to say the parameter's type: Parse, Describe, then Execute. */
    bool check_types;    /* some parameter needs the server's type */
    bool types_ok;       /* checked: every such parameter is bytea */
    bool describing;     /* a Describe was sent, its answer is due */
    bool unnamed;        /* prepared as the unnamed statement (not in the cache) */
    bool parsed;         /* the unnamed statement's Parse is done */
    bool in_pipe;        /* in the pipeline list (phead) */
    bool numeric_number; /* numeric results as Lua numbers (conn:numeric("number")) */
    pgc_t *nc;           /* wait_notify, COPY start: the connection, referenced */
    int copy_id;         /* the COPY this op started */
};

static pgc_t *all_conns;

#define PGLOG(...)                                                                                 \
    do {                                                                                           \
        if (fr_debug_enabled("pg"))                                                                \
            fr_log("pg", __VA_ARGS__);                                                             \
    } while (0)

/* ---- helpers ----------------------------------------------------------------------------- */

/* Copy of msg with every occurrence of secret replaced by "***", libpq's continuation lines
 * ("\n\tIs the server running ...") folded into one line, trailing newline removed. */
static char *scrubbed(const char *msg, const char *secret)
{
    if (!msg)
        msg = "";
    size_t n = strlen(msg), sl = secret ? strlen(secret) : 0;
    char *out = malloc(n + 1 + (sl ? (n / sl + 1) * 3 : 0));
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = msg; *p;) {
        if (sl && strncmp(p, secret, sl) == 0) {
            memcpy(o, "***", 3);
            o += 3;
            p += sl;
        } else if (*p == '\n') {
            while (*p == '\n' || *p == '\t' || *p == ' ')
                p++;
            if (*p && o > out && o[-1] != ' ')
                *o++ = ' ';
        } else {
            *o++ = *p++;
        }
    }
    while (o > out && (o[-1] == '\n' || o[-1] == ' '))
        o--;
    *o = 0;
    return out;
}

static void conn_unref(pgc_t *c);
static void drive(pgc_t *c, int events);
static void stmt_clear(pgc_t *c);
static void free_opts(pgc_t *c);
static void update_watch(pgc_t *c);

static void on_poll_close(uv_handle_t *h)
{
    pgpoll_t *p = (pgpoll_t *)h;
    pgc_t *c = p->c;
    free(p);
    conn_unref(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pgc_t *c = ((pgpoll_t *)h)->c;
    if (status < 0) {
        /* POLLERR (a reset connection): libuv has stopped the handle. Let libpq find out
         * what went wrong, and watch again if the connection is still alive. */
        events = UV_READABLE | UV_WRITABLE;
        c->events = 0;
    }
    drive(c, events);
}

static void poll_close(pgc_t *c)
{
    if (!c->poll)
        return;
    uv_poll_stop(&c->poll->h);
    uv_close((uv_handle_t *)&c->poll->h, on_poll_close);
    c->poll = NULL;
    c->fd = -1;
    c->events = 0;
}

/* A drain that does not end (the server ignores the cancel request, the network is gone) must
 * not hold the connection forever: after cancel_timeout it is closed as lost. */
typedef struct pgtimer {
    uv_timer_t t;
    pgc_t *c;
} pgtimer_t;

static void on_timer_close(uv_handle_t *h)
{
    pgtimer_t *pt = (pgtimer_t *)h;
    pgc_t *c = pt->c;
    free(pt);
    conn_unref(c);
}

static void drain_timer_stop(pgc_t *c)
{
    if (!c->dtimer)
        return;
    uv_timer_stop(&c->dtimer->t);
    uv_close((uv_handle_t *)&c->dtimer->t, on_timer_close);
    c->dtimer = NULL;
}

static void conn_lost(pgc_t *c, const char *why);

static void on_drain_timeout(uv_timer_t *t)
{
    pgc_t *c = ((pgtimer_t *)t)->c;
    drain_timer_stop(c);
    if (c->state == S_READY && c->draining)
        conn_lost(c, "a cancelled statement did not stop in time (cancel_timeout): connection "
                     "closed");
}

static void drain_timer_start(pgc_t *c)
{
    if (c->dtimer || c->cancel_timeout <= 0 || c->cancel_timeout >= FR_FOREVER)
        return;
    pgtimer_t *pt = calloc(1, sizeof *pt);
    if (!pt)
        return;
    uv_timer_init(fr_loop(), &pt->t);
    pt->c = c;
    c->refs++;
    c->dtimer = pt;
    uv_timer_start(&pt->t, on_drain_timeout, (uint64_t)(c->cancel_timeout * 1000), 0);
    uv_unref((uv_handle_t *)&pt->t); /* whoever waits behind the drain keeps the loop alive */
}

/* Watch fd (which may differ from the last one: libpq moves between addresses while it
 * connects). A fresh start after every stop, because a closed-and-reused descriptor number is
 * no longer registered with epoll even though libuv thinks it is. */
static int watch_fd(pgc_t *c, int fd, int events)
{
    if (c->poll && c->fd != fd)
        poll_close(c);
    if (!c->poll) {
        pgpoll_t *p = calloc(1, sizeof *p);
        if (!p)
            return UV_ENOMEM;
        int rc = uv_poll_init(fr_loop(), &p->h, fd);
        if (rc < 0) {
            free(p);
            return rc;
        }
        p->c = c;
        c->poll = p;
        c->fd = fd;
        c->refs++;
        c->ref = true;
    } else {
        uv_poll_stop(&c->poll->h);
    }
    c->events = events;
    return uv_poll_start(&c->poll->h, events, on_poll);
}

static void note_free_all(pgc_t *c)
{
    while (c->nhead) {
        note_t *n = c->nhead;
        c->nhead = n->next;
        free(n->channel);
        free(n->payload);
        free(n);
    }
    c->ntail = NULL;
    c->nnotes = 0;
}

static void conn_unref(pgc_t *c)
{
    if (--c->refs > 0)
        return;
    if (c->cancel)
        PQfreeCancel(c->cancel);
    if (c->prev_all)
        c->prev_all->next_all = c->next_all;
    else if (all_conns == c)
        all_conns = c->next_all;
    if (c->next_all)
        c->next_all->prev_all = c->prev_all;
    free_opts(c);
    free(c->desc);
    free(c->secret);
    free(c->broken_msg);
    free(c);
}

static void op_fail(pgop_t *op, const char *code, bool retryable, const char *msg)
{
    free(op->err);
    op->err = scrubbed(msg, op->c ? op->c->secret : NULL);
    op->errcode = code;
    op->retryable = retryable;
}

/* Complete the op with its outcome; it no longer belongs to the connection. */
static void op_finish(pgop_t *op)
{
    pgc_t *c = op->c;
    if (c && c->cur == op)
        c->cur = NULL;
    if (c && c->waiter == op)
        c->waiter = NULL;
    op->c = NULL;
    if (op->base.heap_index >= 0)
        fr_timer_stop(&op->base);
    fr_op_complete(op);
}

static void fail_everything(pgc_t *c, const char *code, bool retryable, const char *msg)
{
    if (c->cur) {
        op_fail(c->cur, code, retryable, msg);
        op_finish(c->cur);
    }
    while (c->qhead) {
        pgop_t *op = c->qhead;
        c->qhead = op->next;
        op->queued = false;
        op_fail(op, code, retryable, msg);
        op_finish(op);
    }
    c->qtail = NULL;
    while (c->phead) {
        pgop_t *op = c->phead;
        c->phead = op->next;
        op->in_pipe = false;
        op_fail(op, code, retryable, msg);
        op_finish(op);
    }
    c->ptail = NULL;
    if (c->waiter) {
        op_fail(c->waiter, code, retryable, msg);
        op_finish(c->waiter);
    }
}

/* The connection is gone (server closed it, network error): fail every op, stop watching. */
static void conn_lost(pgc_t *c, const char *why)
{
    if (c->state != S_READY)
        return;
    c->state = S_BROKEN;
    const char *m = why ? why : (c->pg ? PQerrorMessage(c->pg) : "connection lost");
    if (!m || !*m)
        m = "connection lost";
    free(c->broken_msg);
    c->broken_msg = scrubbed(m, c->secret);
    c->draining = false;
    drain_timer_stop(c);
    c->copy = COPY_NONE;
    PGLOG("connection %s lost: %s", c->desc, c->broken_msg ? c->broken_msg : "");
    fail_everything(c, "pg.08006", true, c->broken_msg ? c->broken_msg : "connection lost");
    poll_close(c);
}

static void conn_close(pgc_t *c)
{
    if (c->state == S_CLOSED)
        return;
    c->state = S_CLOSED;
    fail_everything(c, "pg.08003", false, "connection closed");
    c->draining = false;
    drain_timer_stop(c);
    poll_close(c);
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    note_free_all(c);
    stmt_clear(c);
}

/* ---- the state machine (callback side: no Lua calls) ------------------------------------- */

static void take_notifies(pgc_t *c)
{
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL) {
        note_t *e = calloc(1, sizeof *e);
        if (e) {
            e->channel = strdup(n->relname);
            e->payload = strdup(n->extra ? n->extra : "");
            e->pid = n->be_pid;
            if (!e->channel || !e->payload) {
                free(e->channel);
                free(e->payload);
                free(e);
                e = NULL;
            }
        }
        PQfreemem(n);
        if (!e)
            continue;
        if (c->ntail)
            c->ntail->next = e;
        else
            c->nhead = e;
        c->ntail = e;
        if (++c->nnotes > MAX_NOTES) { /* nobody reads them: keep the newest */
            note_t *old = c->nhead;
            c->nhead = old->next;
            c->nnotes--;
            free(old->channel);
            free(old->payload);
            free(old);
            if (c->dropped++ == 0)
                fr_log("pg", "%s: more than %d notifications waiting; dropping the oldest", c->desc,
                       MAX_NOTES);
        }
    }
    if (c->nhead && c->waiter)
        op_finish(c->waiter);
}

/* ---- the statement cache: from its second use, conn:query runs a named prepared statement
 * (Parse once, then Bind/Execute only), so the server parses and plans it once per connection.
 * Keyed by the SQL text and the kinds of the parameters sent. */

static char sigchar(Oid t, int fmt)
{
    return t == 0 ? 'u' : t == 16 ? 'b' : fmt ? 'y' : 't';
}

static uint32_t stmt_hash(const pgop_t *op)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)op->sql; *p; p++)
        h = (h ^ *p) * 16777619u;
    for (int i = 0; i < op->nparams; i++)
        h = (h ^ (unsigned char)sigchar(op->types[i], op->fmts[i])) * 16777619u;
    return h;
}

static stmt_t *stmt_find(pgc_t *c, const pgop_t *op, uint32_t h)
{
    for (stmt_t *s = c->stmts[h % STMT_BUCKETS]; s; s = s->next) {
        if (s->hash != h || s->nparams != op->nparams || strcmp(s->sql, op->sql) != 0)
            continue;
        int i = 0;
        while (i < op->nparams && s->sig[i] == sigchar(op->types[i], op->fmts[i]))
            i++;
        if (i == op->nparams)
            return s;
    }
    return NULL;
}

static stmt_t *stmt_add(pgc_t *c, const pgop_t *op, uint32_t h, int state)
{
    size_t sl = strlen(op->sql);
    stmt_t *s = malloc(sizeof *s + (size_t)op->nparams + sl + 1);
    if (!s)
        return NULL;
    s->hash = h;
    s->id = ++c->stmt_seq;
    s->state = state;
    s->nparams = op->nparams;
    s->sig = (char *)(s + 1);
    for (int i = 0; i < op->nparams; i++)
        s->sig[i] = sigchar(op->types[i], op->fmts[i]);
    s->sql = s->sig + op->nparams;
    memcpy(s->sql, op->sql, sl + 1);
    s->ptypes = NULL;
    s->nptypes = 0;
    s->uses = 1;
    s->next = c->stmts[h % STMT_BUCKETS];
    c->stmts[h % STMT_BUCKETS] = s;
    c->nstmts++;
    return s;
}

static void stmt_remove(pgc_t *c, stmt_t *s)
{
    for (stmt_t **pp = &c->stmts[s->hash % STMT_BUCKETS]; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            c->nstmts--;
            free(s->ptypes);
            free(s);
            return;
        }
    }
}

static void stmt_clear(pgc_t *c)
{
    for (int b = 0; b < STMT_BUCKETS; b++) {
        while (c->stmts[b]) {
            stmt_t *s = c->stmts[b];
            c->stmts[b] = s->next;
            free(s->ptypes);
            free(s);
        }
    }
    c->nstmts = 0;
}

/* Room for one more entry: evicts a statement seen once (never a prepared one) when full. */
static bool stmt_room(pgc_t *c)
{
    if (c->nstmts < c->stmt_max)
        return true;
    for (int k = 0; k < STMT_BUCKETS; k++) {
        int b = (c->stmt_evict + k) % STMT_BUCKETS;
        for (stmt_t *s = c->stmts[b]; s; s = s->next) {
            if (s->state == ST_SEEN) {
                c->stmt_evict = b + 1;
                stmt_remove(c, s);
                return true;
            }
        }
    }
    return false;
}

/* The parameters only bytea can take against the types the server gave them: true when they
 * all go to bytea; otherwise the op fails (pg.22021, what the server says of bytes that are not
 * text) naming the first parameter that does not, what is wrong with it and what it should be. */
static bool check_param_types(pgop_t *op, const Oid *ptypes, int np)
{
    for (int i = 0; i < op->nparams && i < np; i++) {
        if (!fr_pg_param_needs_type(op->fmts[i], op->types[i]) || ptypes[i] == FR_OID_BYTEA)
            continue;
        size_t at = fr_pg_text_invalid_at(op->vals[i], (size_t)op->lens[i]);
        unsigned char bad = at < (size_t)op->lens[i] ? (unsigned char)op->vals[i][at] : 0;
        const char *tname = fr_pg_type_name(ptypes[i]);
        char tbuf[24], what[24], msg[400];
        if (!tname) {
            snprintf(tbuf, sizeof tbuf, "type oid %u", (unsigned)ptypes[i]);
            tname = tbuf;
        }
        if (bad)
            snprintf(what, sizeof what, "byte 0x%02x", bad);
        else
            snprintf(what, sizeof what, "a NUL byte");
        snprintf(msg, sizeof msg,
                 "query parameter $%d is not valid UTF-8 text (%s at offset %zu) and the server "
                 "takes it as %s; convert it to UTF-8, or send binary data as pg.bytea(s) to a "
                 "bytea parameter",
                 i + 1, what, at, tname);
        op_fail(op, "pg.22021", false, msg);
        return false;
    }
    op->types_ok = true;
    return true;
}

/* Send the op's next command: Parse (a statement to prepare), Describe (parameter types the
 * server must say), or the statement itself. Returns 0 when sent, -1 when libpq could not send
 * (the connection's error says why), 1 when the op failed without a word to the server (a
 * parameter the cached types already refuse). */
static int send_step(pgc_t *c, pgop_t *op)
{
    char name[24] = "";
    int ok;
    if (op->stmt)
        snprintf(name, sizeof name, "fr_%d", op->stmt->id);
    if (op->preparing || (op->unnamed && !op->parsed)) {
        ok = PQsendPrepare(c->pg, name, op->sql, op->nparams, op->types);
    } else if (op->check_types && !op->types_ok && op->stmt && op->stmt->ptypes) {
        if (!check_param_types(op, op->stmt->ptypes, op->stmt->nptypes))
            return 1;
        return send_step(c, op);
    } else if (op->check_types && !op->types_ok) {
        ok = PQsendDescribePrepared(c->pg, name);
        op->describing = ok;
    } else if (op->stmt || op->unnamed) {
        ok = PQsendQueryPrepared(c->pg, name, op->nparams, op->vals, op->lens, op->fmts, 0);
    } else if (op->kind == K_QUERY) {
        ok = PQsendQueryParams(c->pg, op->sql, op->nparams, op->types, op->vals, op->lens, op->fmts,
                               0);
    } else {
        ok = PQsendQuery(c->pg, op->sql);
    }
    if (!ok) {
        if (op->stmt && op->preparing)
            stmt_remove(c, op->stmt);
        op->stmt = NULL;
        op->preparing = false;
        return -1;
    }
    int r = PQflush(c->pg);
    if (r < 0)
        return -1;
    c->want_flush = r == 1;
    return 0;
}

/* Which way a query goes: unnamed (one round trip, as a one-off statement should) until its
 * prepare_from-th use, prepared from then on (Parse, then Bind/Execute only ever after). A
 * query whose parameters need the server's types is prepared at once (Parse, Describe, then
 * Execute), so that the types are asked once per connection. Returns as send_step. */
static int send_request(pgc_t *c, pgop_t *op)
{
    op->unnamed = op->parsed = op->describing = false;
    if (op->kind == K_QUERY && c->stmt_max > 0) {
        uint32_t h = stmt_hash(op);
        stmt_t *s = stmt_find(c, op, h);
        if (s && s->state == ST_PARSING) { /* its Parse never completed: start afresh */
            stmt_remove(c, s);
            s = NULL;
        }
        bool now = op->check_types || c->prepare_from <= 1;
        if (!s) {
            if (stmt_room(c))
                s = stmt_add(c, op, h, now ? ST_PARSING : ST_SEEN);
            if (s && now) {
                op->preparing = true;
                op->stmt = s;
            }
        } else if (s->state == ST_SEEN && !now && ++s->uses < c->prepare_from) {
            /* not yet: unnamed once more */
        } else if (s->state == ST_SEEN) {
            s->state = ST_PARSING;
            s->id = ++c->stmt_seq;
            op->preparing = true;
            op->stmt = s;
        } else {
            op->stmt = s;
        }
    }
    if (op->check_types && !op->types_ok && !op->stmt)
        op->unnamed = true; /* no room in the cache (or none): the unnamed statement */
    return send_step(c, op);
}

static void start_next(pgc_t *c)
{
    while (!c->cur && c->qhead && c->state == S_READY && !c->draining && c->copy == COPY_NONE &&
           !c->copy_ended) {
        pgop_t *op = c->qhead;
        c->qhead = op->next;
        if (!c->qhead)
            c->qtail = NULL;
        op->queued = false;
        op->next = NULL;
        c->cur = op;
        int rc = send_request(c, op);
        if (rc > 0) {
            op_finish(op); /* refused before anything was sent */
        } else if (rc < 0) {
            op_fail(op, "pg.08006", PQstatus(c->pg) == CONNECTION_BAD, PQerrorMessage(c->pg));
            op_finish(op);
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                conn_lost(c, NULL);
                return;
            }
        }
    }
}

/* PQputCopyData / PQputCopyEnd returned -1: either the connection is gone, or the server
 * already ended the COPY with an error (bad data) and its result waits to be read. Returns
 * false when the connection is lost. */
static bool copy_in_ended(pgc_t *c)
{
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_lost(c, NULL);
        return false;
    }
    c->copy = COPY_NONE;
    return true;
}

/* Discard what a cancelled statement still sends; done when libpq is idle again and no
 * PQcancel is in flight. */
static void drain_step(pgc_t *c)
{
    for (;;) {
        if (c->copy == COPY_OUT) {
            char *b;
            int r;
            while ((r = PQgetCopyData(c->pg, &b, 1)) > 0)
                PQfreemem(b);
            if (r == 0)
                return;
            c->copy = COPY_NONE;
            if (r == -2) {
                conn_lost(c, NULL);
                return;
            }
        }
        if (c->copy == COPY_IN) {
            int r = PQputCopyEnd(c->pg, "COPY abandoned by a cancelled task");
            if (r == 0) {
                c->want_flush = true;
                return;
            }
            if (r < 0) {
                if (!copy_in_ended(c))
                    return;
                continue;
            }
            c->copy = COPY_NONE;
            r = PQflush(c->pg);
            if (r < 0) {
                conn_lost(c, NULL);
                return;
            }
            c->want_flush = r == 1;
        }
        if (PQisBusy(c->pg))
            return;
        PGresult *r = PQgetResult(c->pg);
        if (r) {
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_COPY_IN)
                c->copy = COPY_IN;
            else if (st == PGRES_COPY_OUT)
                c->copy = COPY_OUT;
            PQclear(r);
            continue;
        }
        if (c->cancel_flight == 0) {
            c->draining = false;
            drain_timer_stop(c);
        }
        return;
    }
}

static void keep_result(pgop_t *op, PGresult *r)
{
    if (op->res && PQresultStatus(op->res) == PGRES_FATAL_ERROR) {
        PQclear(r); /* the first error wins */
        return;
    }
    PQclear(op->res);
    op->res = r;
}

/* What step_done returns once the op's next command was sent (rc: send_step's or
 * send_request's): true when it went on (sent, or the connection was lost and conn_lost
 * finished the op), false when the op is finished with the error kept by the sender. */
static bool went_on(pgc_t *c, int rc)
{
    if (rc < 0) {
        conn_lost(c, NULL);
        return true;
    }
    if (rc > 0)
        return false;
    update_watch(c);
    return true;
}

/* One command of the op is over (libpq returned NULL). Returns true when the op goes on: the
 * Describe or the Execute after a Parse, the Execute after a Describe, a re-prepare after the
 * server lost the statement. False when the op is finished (its result or error is kept). */
static bool step_done(pgc_t *c, pgop_t *op)
{
    bool failed = op->res && PQresultStatus(op->res) == PGRES_FATAL_ERROR;
    if (op->describing) {
        op->describing = false;
        if (failed)
            return false;
        int np = op->res ? PQnparams(op->res) : 0;
        Oid *pt = malloc(sizeof(Oid) * (size_t)(np > 0 ? np : 1));
        if (!pt) {
            op_fail(op, "pg.53200", false, "out of memory");
            return false;
        }
        for (int i = 0; i < np; i++)
            pt[i] = PQparamtype(op->res, i);
        PQclear(op->res);
        op->res = NULL;
        bool good = check_param_types(op, pt, np);
        if (op->stmt) { /* the types are the statement's: asked once per connection */
            free(op->stmt->ptypes);
            op->stmt->ptypes = pt;
            op->stmt->nptypes = np;
        } else {
            free(pt);
        }
        if (!good)
            return false;
    } else if (op->preparing && !failed) {
        op->stmt->state = ST_READY;
        op->preparing = false;
        PQclear(op->res);
        op->res = NULL;
    } else if (op->preparing) {
        stmt_remove(c, op->stmt);
        op->stmt = NULL;
        return false;
    } else if (op->unnamed && !op->parsed) {
        if (failed)
            return false;
        op->parsed = true;
        PQclear(op->res);
        op->res = NULL;
    } else if (failed && op->stmt) {
        /* 26000: DEALLOCATE / DISCARD ALL dropped it; 0A000: a table changed under it */
        const char *st = PQresultErrorField(op->res, PG_DIAG_SQLSTATE);
        if (!st || (strcmp(st, "26000") != 0 && strcmp(st, "0A000") != 0))
            return false;
        if (strcmp(st, "26000") == 0)
            stmt_clear(c);
        else
            stmt_remove(c, op->stmt);
        op->stmt = NULL;
        if (op->retried || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            return false;
        op->retried = true;
        PQclear(op->res);
        op->res = NULL;
        return went_on(c, send_request(c, op));
    } else {
        return false;
    }
    return went_on(c, send_step(c, op));
}

/* Read results for the current statement until libpq says it is complete. */
static void collect(pgc_t *c, pgop_t *op)
{
    while (!PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                conn_lost(c, NULL);
                return;
            }
            if (step_done(c, op)) {
                if (c->state != S_READY)
                    return;
                continue; /* the Execute is on its way */
            }
            op_finish(op);
            return;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            c->copy = st == PGRES_COPY_OUT ? COPY_OUT : COPY_IN;
            if (op->kind == K_COPY_START) {
                op->copy_id = ++c->copy_id;
                keep_result(op, r);
            } else {
                PQclear(r);
                op_fail(op, "pg.copy", false,
                        "a COPY statement needs conn:copy_from or conn:copy_to");
                c->draining = true;
            }
            op_finish(op);
            return;
        }
        if (st == PGRES_COMMAND_OK && !op->stmt) {
            /* the server dropped every prepared statement: forget ours */
            const char *cs = PQcmdStatus(r);
            if (strcmp(cs, "DISCARD ALL") == 0 || strcmp(cs, "DEALLOCATE ALL") == 0)
                stmt_clear(c);
        }
        keep_result(op, r);
    }
}

static void op_step(pgc_t *c, pgop_t *op, int events)
{
    switch (op->kind) {
    case K_COPY_PUT:
        if (op->buf) {
            int r = PQputCopyData(c->pg, op->buf, (int)op->len);
            if (r < 0) {
                if (copy_in_ended(c)) { /* the server's error is the op's outcome */
                    op->kind = K_COPY_END;
                    op->end_sent = true;
                    collect(c, op);
                }
                return;
            }
            if (r == 0) {
                c->want_flush = true;
                return;
            }
            free(op->buf);
            op->buf = NULL;
            r = PQflush(c->pg);
            if (r < 0) {
                conn_lost(c, NULL);
                return;
            }
            c->want_flush = r == 1;
        }
        if (!c->want_flush)
            op_finish(op);
        return;
    case K_COPY_GET:
        if (events & UV_READABLE)
            op_finish(op);
        return;
    case K_COPY_END:
        if (!op->end_sent) {
            int r = PQputCopyEnd(c->pg, op->end_msg);
            if (r < 0) {
                if (!copy_in_ended(c))
                    return;
                op->end_sent = true;
                collect(c, op);
                return;
            }
            if (r == 0) {
                c->want_flush = true;
                return;
            }
            op->end_sent = true;
            c->copy = COPY_NONE;
            r = PQflush(c->pg);
            if (r < 0) {
                conn_lost(c, NULL);
                return;
            }
            c->want_flush = r == 1;
        }
        collect(c, op);
        return;
    default:
        collect(c, op);
    }
}

static void on_notice(void *arg, const char *msg)
{
    pgc_t *c = arg;
    PGLOG("%s: %s", c->desc, msg);
}

static void finish_connect(pgc_t *c)
{
    pgop_t *op = c->connect_op;
    c->connect_op = NULL;
    c->state = S_READY;
    PQsetnonblocking(c->pg, 1);
    PQsetNoticeProcessor(c->pg, on_notice, c);
    c->cancel = PQgetCancel(c->pg);
    PGLOG("connected to %s (backend pid %d)", c->desc, PQbackendPID(c->pg));
    op->c = c; /* results() hands it to a userdata */
    fr_op_complete(op);
}

/* libpq reports why a connection failed only as text; the server's SQLSTATE for the common
 * cases is recovered from it so that policy can read err.code, never the message. */
static const char *connect_code(const char *msg, bool *retryable)
{
    static const struct {
        const char *needle, *code;
        bool retryable;
    } m[] = {
        {"password authentication failed", "pg.28P01", false},
        {"no password supplied", "pg.28P01", false},
        {"authentication failed", "pg.28000", false},
        {"no pg_hba.conf entry", "pg.28000", false},
        {"database \"", "pg.3D000", false}, /* database "x" does not exist */
        {"role \"", "pg.28000", false},     /* role "x" does not exist */
        {"too many clients", "pg.53300", true},
        {"the database system is starting up", "pg.57P03", true},
        {"the database system is shutting down", "pg.57P03", true},
        {"invalid connection option", "pg.08001", false},
        {"invalid ", "pg.08001", false},
        {"could not translate host name", "pg.08001", false},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (strstr(msg, m[i].needle) && (m[i].needle[0] != 'd' && m[i].needle[0] != 'r'
                                             ? true
                                             : strstr(msg, "does not exist") != NULL)) {
            *retryable = m[i].retryable;
            return m[i].code;
        }
    *retryable = true;
    return "pg.08001";
}

static void connect_fail(pgc_t *c, const char *msg)
{
    pgop_t *op = c->connect_op;
    c->connect_op = NULL;
    if (!msg || !*msg)
        msg = "could not connect";
    bool retryable;
    const char *code = connect_code(msg, &retryable);
    op->c = c;
    op_fail(op, code, retryable, msg);
    op->c = c; /* op_free closes and releases it */
    poll_close(c);
    c->state = S_BROKEN;
    fr_op_complete(op);
}

static void connect_step(pgc_t *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    int fd = PQsocket(c->pg);
    switch (st) {
    case PGRES_POLLING_OK:
        if (fd < 0 || watch_fd(c, fd, UV_READABLE) < 0) {
            connect_fail(c, "could not watch the connection's socket");
            return;
        }
        finish_connect(c);
        update_watch(c);
        return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        if (fd < 0 || watch_fd(c, fd, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE) < 0)
            connect_fail(c, "could not watch the connection's socket");
        return;
    default:
        connect_fail(c, PQerrorMessage(c->pg));
    }
}

/* Ref the poll handle only while someone waits on this connection, so an idle connection
 * (still watched for NOTIFY and EOF) never keeps the process alive. */
static void update_watch(pgc_t *c)
{
    if (!c->poll || c->state != S_READY)
        return;
    int ev = UV_READABLE | (c->want_flush ? UV_WRITABLE : 0);
    if (ev != c->events) {
        c->events = ev;
        uv_poll_start(&c->poll->h, ev, on_poll);
    }
    bool want_ref = c->cur || c->qhead || c->phead || c->waiter || c->draining;
    if (want_ref != c->ref) {
        c->ref = want_ref;
        if (want_ref)
            uv_ref((uv_handle_t *)&c->poll->h);
        else
            uv_unref((uv_handle_t *)&c->poll->h);
    }
}

/* ---- pipeline mode: every statement is sent at once with its own Sync; results come back in
 * order: [Parse result, NULL] when it prepares, the statement's results then NULL, then
 * PGRES_PIPELINE_SYNC, which ends the op. */

static int pipe_send(pgc_t *c, pgop_t *op)
{
    stmt_t *s = NULL;
    char name[24];
    if (c->stmt_max > 0) {
        uint32_t h = stmt_hash(op);
        /* in a pipeline the Parse costs no round trip: prepared from the first use */
        s = stmt_find(c, op, h);
        if (!s && stmt_room(c)) {
            s = stmt_add(c, op, h, ST_PARSING);
            op->preparing = s != NULL;
        } else if (s && s->state == ST_SEEN) {
            s->state = ST_PARSING;
            s->id = ++c->stmt_seq;
            op->preparing = true;
        } else if (s && s->state == ST_PARSING) {
            s = NULL; /* its Parse is still on the way: unnamed this time */
        }
    }
    op->stmt = s;
    int ok = 1;
    if (s) {
        snprintf(name, sizeof name, "fr_%d", s->id);
        if (op->preparing)
            ok = PQsendPrepare(c->pg, name, op->sql, op->nparams, op->types);
        ok = ok && PQsendQueryPrepared(c->pg, name, op->nparams, op->vals, op->lens, op->fmts, 0);
    } else {
        ok = PQsendQueryParams(c->pg, op->sql, op->nparams, op->types, op->vals, op->lens, op->fmts,
                               0);
    }
    if (!ok || !PQpipelineSync(c->pg)) {
        if (op->preparing && s)
            stmt_remove(c, s);
        op->stmt = NULL;
        op->preparing = false;
        return -1;
    }
    int r = PQflush(c->pg);
    if (r < 0)
        return -1;
    c->want_flush = r == 1;
    op->in_pipe = true;
    op->next = NULL;
    if (c->ptail)
        c->ptail->next = op;
    else
        c->phead = op;
    c->ptail = op;
    return 0;
}

static void pipe_collect(pgc_t *c)
{
    int nulls = 0;
    while (c->phead && !PQisBusy(c->pg)) {
        pgop_t *op = c->phead;
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                conn_lost(c, NULL);
                return;
            }
            if (++nulls > 2)
                return; /* nothing more until more input */
            continue;
        }
        nulls = 0;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            c->phead = op->next;
            if (!c->phead)
                c->ptail = NULL;
            op->in_pipe = false;
            op->next = NULL;
            op_finish(op); /* frees it if its task was cancelled meanwhile */
            continue;
        }
        if (op->preparing) {
            op->preparing = false;
            if (st == PGRES_COMMAND_OK) {
                op->stmt->state = ST_READY;
                PQclear(r);
                continue;
            }
            stmt_remove(c, op->stmt);
            op->stmt = NULL;
        }
        keep_result(op, r);
    }
}

static void drive(pgc_t *c, int events)
{
    if (c->state == S_CONNECTING) {
        connect_step(c);
        return;
    }
    if (c->state != S_READY)
        return;
    if (events & UV_READABLE) {
        if (!PQconsumeInput(c->pg)) {
            conn_lost(c, NULL);
            return;
        }
    }
    if (c->want_flush && (events & UV_WRITABLE)) {
        int r = PQflush(c->pg);
        if (r < 0) {
            conn_lost(c, NULL);
            return;
        }
        c->want_flush = r == 1;
    }
    take_notifies(c);
    if (c->pipe) {
        pipe_collect(c);
        if (c->state == S_READY && PQstatus(c->pg) == CONNECTION_BAD)
            conn_lost(c, NULL);
        update_watch(c);
        return;
    }
    if (c->draining)
        drain_step(c);
    if (c->state == S_READY && !c->draining && c->cur) {
        op_step(c, c->cur, events);
        /* a statement that turned out to need draining may have its data buffered already:
         * no readable event would come for it */
        if (c->state == S_READY && c->draining)
            drain_step(c);
    }
    if (c->state == S_READY && c->cur == NULL)
        start_next(c);
    if (c->state == S_READY && PQstatus(c->pg) == CONNECTION_BAD)
        conn_lost(c, NULL);
    update_watch(c);
}

/* ---- cancelling a running statement --------------------------------------------------------- */

typedef struct {
    uv_work_t req;
    pgc_t *c;
    int ok;
    char err[256];
} cancel_work_t;

static void cancel_work(uv_work_t *req)
{
    cancel_work_t *w = req->data;
    w->ok = PQcancel(w->c->cancel, w->err, sizeof w->err);
}

static void cancel_done(uv_work_t *req, int status)
{
    cancel_work_t *w = req->data;
    pgc_t *c = w->c;
    c->cancel_flight--;
    if (c->state == S_READY) {
        if (status < 0 || !w->ok) {
            char msg[320];
            snprintf(msg, sizeof msg, "could not cancel the running statement: %s", w->err);
            conn_lost(c, msg);
        } else {
            drive(c, 0);
        }
    }
    free(w);
    conn_unref(c);
}

/* The op's task is cancelled while its statement runs: drain in the background. */
static void start_drain(pgc_t *c, bool send_cancel)
{
    c->draining = true;
    drain_timer_start(c);
    if (send_cancel && c->cancel) {
        cancel_work_t *w = calloc(1, sizeof *w);
        if (w) {
            w->req.data = w;
            w->c = c;
            if (uv_queue_work(fr_loop(), &w->req, cancel_work, cancel_done) == 0) {
                c->cancel_flight++;
                c->refs++;
                PGLOG("cancelling the statement running on %s", c->desc);
            } else {
                free(w);
                conn_lost(c, "could not start cancelling the running statement");
                return;
            }
        }
    }
    drive(c, 0);
}

static bool op_cancel(fr_op_t *base)
{
    pgop_t *op = (pgop_t *)base;
    pgc_t *c = op->c;
    if (!c)
        return true;
    if (op->in_pipe)
        return false; /* its results still come, in order; pipe_collect completes it */
    if (op->kind == K_CONNECT) {
        c->connect_op = NULL;
        poll_close(c);
        c->state = S_BROKEN;
        return true; /* op_free closes and releases the connection */
    }
    if (op->queued) {
        pgop_t **pp = &c->qhead, *prev = NULL;
        while (*pp && *pp != op) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = op->next;
            if (c->qtail == op)
                c->qtail = prev;
        }
        op->queued = false;
        op->c = NULL;
        update_watch(c);
        return true;
    }
    if (c->waiter == op) {
        c->waiter = NULL;
        op->c = NULL;
        update_watch(c);
        return true;
    }
    if (c->cur == op) {
        c->cur = NULL;
        op->c = NULL;
        if (op->preparing && op->stmt)
            stmt_remove(c, op->stmt); /* its name is never reused: a late Parse harms nothing */
        /* a statement in progress: cancel it on the server unless only COPY IN data flows,
         * which ending the COPY with an error stops */
        bool running = op->kind != K_COPY_PUT && op->kind != K_COPY_GET;
        if (op->kind == K_COPY_END && !op->end_sent)
            running = false;
        if (c->copy == COPY_OUT)
            running = true;
        start_drain(c, running);
        return true;
    }
    op->c = NULL;
    return true;
}

static void op_free(fr_op_t *base)
{
    pgop_t *op = (pgop_t *)base;
    pgc_t *c = op->c;
    if (op->kind == K_CONNECT && c) {
        if (c->connect_op == op)
            c->connect_op = NULL;
        conn_close(c);
        conn_unref(c);
    } else if (c) {
        if (c->cur == op)
            c->cur = NULL;
        if (c->waiter == op)
            c->waiter = NULL;
    }
    if (op->nc) {
        pgc_t *nc = op->nc;
        if (nc->waiter == op)
            nc->waiter = NULL;
        /* a COPY started, but its task was cancelled before it heard so: nobody will end it */
        if (op->kind == K_COPY_START && op->copy_id && op->base.state == FR_OP_CANCELLED &&
            nc->state == S_READY && nc->copy_id == op->copy_id && nc->copy != COPY_NONE &&
            !nc->cur && !nc->draining)
            start_drain(nc, nc->copy == COPY_OUT);
        conn_unref(nc);
    }
    PQclear(op->res);
    free(op->err);
    free(op->blob);
    free(op->buf);
}

/* ---- results -------------------------------------------------------------------------------- */

static void push_error_fields(lua_State *L, const PGresult *r)
{
    static const struct {
        int field;
        const char *name;
    } f[] = {{PG_DIAG_MESSAGE_DETAIL, "detail"},
             {PG_DIAG_MESSAGE_HINT, "hint"},
             {PG_DIAG_SEVERITY_NONLOCALIZED, "severity"},
             {PG_DIAG_CONTEXT, "context"},
             {PG_DIAG_SCHEMA_NAME, "schema"},
             {PG_DIAG_TABLE_NAME, "table"},
             {PG_DIAG_COLUMN_NAME, "column"},
             {PG_DIAG_CONSTRAINT_NAME, "constraint"}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        const char *v = PQresultErrorField(r, f[i].field);
        if (v) {
            lua_pushstring(L, v);
            lua_setfield(L, -2, f[i].name);
        }
    }
    const char *pos = PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION);
    if (pos) {
        lua_pushinteger(L, atoi(pos));
        lua_setfield(L, -2, "position");
    }
}

static bool sqlstate_retryable(const char *st)
{
    return strncmp(st, "08", 2) == 0 || strcmp(st, "40001") == 0 || strcmp(st, "40P01") == 0 ||
           strcmp(st, "57P01") == 0 || strcmp(st, "57P02") == 0 || strcmp(st, "57P03") == 0 ||
           strcmp(st, "53300") == 0;
}

static int raise_result_error(lua_State *L, const PGresult *r, const char *desc, bool lost)
{
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg)
        msg = PQresultErrorMessage(r);
    char code[16];
    if (!st)
        st = lost ? "08006" : "XX000";
    snprintf(code, sizeof code, "pg.%s", st);
    char *m = scrubbed(msg, NULL);
    fr_error_push(L, code, m ? m : "error", lost || sqlstate_retryable(st));
    free(m);
    lua_pushstring(L, st);
    lua_setfield(L, -2, "sqlstate");
    push_error_fields(L, r);
    if (desc) {
        lua_pushstring(L, desc);
        lua_setfield(L, -2, "server");
    }
    return lua_error(L);
}

static int raise_op_error(lua_State *L, pgop_t *op, const char *desc)
{
    fr_error_push(L, op->errcode, op->err ? op->err : "error", op->retryable);
    if (strncmp(op->errcode, "pg.", 3) == 0 && strlen(op->errcode) == 8) {
        lua_pushstring(L, op->errcode + 3);
        lua_setfield(L, -2, "sqlstate");
    }
    if (desc) {
        lua_pushstring(L, desc);
        lua_setfield(L, -2, "server");
    }
    return lua_error(L);
}

/* rows = {row1, row2, ..., columns = {{name=, type=, oid=}, ...}, affected = n, command = s} */
static int push_rows(lua_State *L, PGresult *r, int flags)
{
    int nt = PQntuples(r), nf = PQnfields(r);
    luaL_checkstack(L, nf + 8, "too many columns");
    fr_json_push_null(L);
    int null_idx = lua_gettop(L);
    lua_createtable(L, nt, 3);
    int rows = lua_gettop(L);
    int names = rows + 1;
    Oid oids[nf > 0 ? nf : 1];
    lua_createtable(L, nf, 0); /* columns */
    for (int j = 0; j < nf; j++) {
        oids[j] = PQftype(r, j);
        lua_createtable(L, 0, 3);
        lua_pushstring(L, PQfname(r, j));
        lua_setfield(L, -2, "name");
        const char *tname = fr_pg_type_name(oids[j]);
        if (tname)
            lua_pushstring(L, tname);
        else
            lua_pushfstring(L, "oid:%d", (int)oids[j]);
        lua_setfield(L, -2, "type");
        lua_pushinteger(L, oids[j]);
        lua_setfield(L, -2, "oid");
        lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, rows, "columns");
    for (int j = 0; j < nf; j++)
        lua_pushstring(L, PQfname(r, j)); /* names at names .. names+nf-1 */
    for (int i = 0; i < nt; i++) {
        lua_createtable(L, 0, nf);
        for (int j = 0; j < nf; j++) {
            lua_pushvalue(L, names + j);
            if (PQgetisnull(r, i, j))
                lua_pushvalue(L, null_idx);
            else
                fr_pg_push_text(L, oids[j], PQgetvalue(r, i, j), (size_t)PQgetlength(r, i, j),
                                flags);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, rows, i + 1);
    }
    lua_settop(L, rows);
    const char *aff = PQcmdTuples(r);
    if (aff && *aff) {
        lua_pushinteger(L, strtoll(aff, NULL, 10));
        lua_setfield(L, rows, "affected");
    }
    const char *cmd = PQcmdStatus(r);
    if (cmd && *cmd) {
        lua_pushstring(L, cmd);
        lua_setfield(L, rows, "command");
    }
    return 1;
}

/* Copy a request so it can wait in the queue after the Lua values are gone. */
static int copy_request(pgop_t *op, const char *sql, const fr_pg_params_t *p)
{
    size_t sl = strlen(sql) + 1, total = sl;
    for (int i = 0; i < p->n; i++)
        total += p->vals[i] ? (size_t)p->lens[i] + 1 : 0;
    size_t arr = (size_t)p->n * (sizeof(char *) + 2 * sizeof(int) + sizeof(Oid));
    char *blob = malloc(arr + total + 1);
    if (!blob)
        return -1;
    op->blob = blob;
    char *data = blob + arr;
    if (p->n) {
        op->vals = (const char **)blob;
        op->lens = (int *)(blob + (size_t)p->n * sizeof(char *));
        op->fmts = op->lens + p->n;
        op->types = (Oid *)(op->fmts + p->n);
        memcpy(op->lens, p->lens, (size_t)p->n * sizeof(int));
        memcpy(op->fmts, p->fmts, (size_t)p->n * sizeof(int));
        memcpy(op->types, p->types, (size_t)p->n * sizeof(Oid));
    }
    memcpy(data, sql, sl);
    op->sql = data;
    data += sl;
    for (int i = 0; i < p->n; i++) {
        if (!p->vals[i]) {
            op->vals[i] = NULL;
            continue;
        }
        memcpy(data, p->vals[i], (size_t)p->lens[i]);
        data[p->lens[i]] = 0;
        op->vals[i] = data;
        data += p->lens[i] + 1;
    }
    op->nparams = p->n;
    return 0;
}

/* ---- Lua bindings --------------------------------------------------------------------------- */

typedef struct {
    pgc_t *c;
} connbox_t;

static int op_results(lua_State *L, fr_op_t *base);

static const fr_op_vt_t connect_vt = {"pg.connect", op_results, op_cancel, op_free, true};
static const fr_op_vt_t query_vt = {"pg.query", op_results, op_cancel, op_free, true};
static const fr_op_vt_t copy_vt = {"pg.copy", op_results, op_cancel, op_free, true};
static const fr_op_vt_t notify_vt = {"pg.wait_notify", op_results, op_cancel, op_free, true};

static pgc_t *check_conn(lua_State *L, int idx)
{
    connbox_t *b = luaL_checkudata(L, idx, CONN_MT);
    pgc_t *c = b->c;
    if (!c || c->state == S_CLOSED)
        luaL_error(L, "pg: the connection is closed");
    return c;
}

static int raise_broken(lua_State *L, pgc_t *c)
{
    fr_error_push(L, "pg.08006", c->broken_msg ? c->broken_msg : "connection lost", true);
    lua_pushliteral(L, "08006");
    lua_setfield(L, -2, "sqlstate");
    lua_pushstring(L, c->desc);
    lua_setfield(L, -2, "server");
    return lua_error(L);
}

static void push_conn(lua_State *L, pgc_t *c)
{
    connbox_t *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->c = NULL;
    luaL_setmetatable(L, CONN_MT);
    b->c = c;
    c->owned = true;
}

static void push_note(lua_State *L, pgc_t *c)
{
    note_t *n = c->nhead;
    c->nhead = n->next;
    c->nnotes--;
    if (!c->nhead)
        c->ntail = NULL;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, n->channel);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, n->payload);
    lua_setfield(L, -2, "payload");
    lua_pushinteger(L, n->pid);
    lua_setfield(L, -2, "pid");
    free(n->channel);
    free(n->payload);
    free(n);
}

static int op_results(lua_State *L, fr_op_t *base)
{
    pgop_t *op = (pgop_t *)base;
    switch (op->kind) {
    case K_CONNECT: {
        pgc_t *c = op->c;
        if (op->err)
            return raise_op_error(L, op, c ? c->desc : NULL);
        if (c->state != S_READY) { /* the connect_timeout timer fired first */
            op_fail(op, "pg.08001", true, "timeout expired (connect_timeout)");
            return raise_op_error(L, op, c->desc);
        }
        op->c = NULL;
        push_conn(L, c);
        return 1;
    }
    case K_NOTIFY: {
        if (op->err)
            return raise_op_error(L, op, NULL);
        pgc_t *c = op->nc; /* op holds a reference */
        if (c->waiter == op)
            c->waiter = NULL;
        if (c->state != S_CLOSED && c->nhead)
            push_note(L, c);
        else
            lua_pushnil(L);
        return 1;
    }
    case K_COPY_PUT:
        if (op->err)
            return raise_op_error(L, op, NULL);
        return 0;
    case K_COPY_GET:
        if (op->err)
            return raise_op_error(L, op, NULL);
        lua_pushboolean(L, 0);
        return 1;
    default:
        break;
    }
    if (op->err)
        return raise_op_error(L, op, NULL);
    PGresult *r = op->res;
    if (!r) {
        lua_newtable(L);
        return 1;
    }
    switch (PQresultStatus(r)) {
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
    case PGRES_SINGLE_TUPLE:
        if (op->kind == K_COPY_START) {
            fr_error_push(L, "pg.copy", "not a COPY statement", false);
            return lua_error(L);
        }
        if (op->kind == K_COPY_END) {
            const char *aff = PQcmdTuples(r);
            if (op->get_end)
                lua_pushnil(L);
            lua_pushinteger(L, aff && *aff ? strtoll(aff, NULL, 10) : 0);
            return op->get_end ? 2 : 1;
        }
        push_rows(L, r, op->numeric_number ? FR_PG_NUMERIC_NUMBER : 0);
        return 1;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
        lua_pushstring(L, PQresultStatus(r) == PGRES_COPY_IN ? "in" : "out");
        lua_pushinteger(L, op->copy_id);
        return 2;
    default:
        return raise_result_error(L, r, NULL, false);
    }
}

/* Start a request on c, or queue it behind the statement running there. */
static int run_request(lua_State *L, pgc_t *c, int kind, const char *sql, fr_pg_params_t *p)
{
    if (c->state == S_BROKEN)
        return raise_broken(L, c);
    if (c->state != S_READY)
        return luaL_error(L, "pg: the connection is not ready");
    if (c->pipe && kind != K_QUERY)
        return luaL_error(L,
                          "pg: %s is not available in pipeline mode (conn:pipeline(false) "
                          "first)",
                          kind == K_EXEC ? "conn:exec" : "COPY");
    bool check_types = false;
    for (int i = 0; i < p->n && !check_types; i++)
        check_types = fr_pg_param_needs_type(p->fmts[i], p->types[i]);
    if (check_types && c->pipe) {
        /* a Describe would have to wait in the middle of the pipeline */
        for (int i = 0; i < p->n; i++) {
            if (!fr_pg_param_needs_type(p->fmts[i], p->types[i]))
                continue;
            fr_error_push(L, "pg.22021", "", false);
            lua_pushfstring(L,
                            "query parameter $%d is not valid UTF-8 text; in pipeline mode "
                            "binary data goes only as pg.bytea(s)",
                            i + 1);
            lua_setfield(L, -2, "message");
            lua_pushliteral(L, "22021");
            lua_setfield(L, -2, "sqlstate");
            return lua_error(L);
        }
    }
    pgop_t *op = fr_op_new(L, sizeof *op, &query_vt);
    op->kind = kind;
    op->c = c;
    op->numeric_number = c->numeric_number;
    op->check_types = check_types;
    if (kind == K_COPY_START) {
        op->nc = c;
        c->refs++;
    }
    if (c->pipe) {
        /* op->sql and op->vals point into the task's stack, which holds them while it waits */
        op->sql = sql;
        op->nparams = p->n;
        op->vals = p->vals;
        op->lens = p->lens;
        op->fmts = p->fmts;
        op->types = p->types;
        if (pipe_send(c, op) < 0) {
            char *m = scrubbed(PQerrorMessage(c->pg), c->secret);
            bool bad = PQstatus(c->pg) == CONNECTION_BAD;
            op->c = NULL;
            fr_op_discard(op);
            if (bad)
                conn_lost(c, m);
            fr_error_push(L, "pg.08006", m ? m : "could not send the query", bad);
            free(m);
            return lua_error(L);
        }
        update_watch(c);
        return fr_op_wait(L, op);
    }
    PGLOG("%s on %s: %.200s", kind == K_EXEC ? "exec" : "query", c->desc, sql);
    if (!c->cur && !c->draining && c->copy == COPY_NONE && !c->copy_ended && !c->qhead) {
        op->sql = sql;
        op->nparams = p->n;
        op->vals = p->vals;
        op->lens = p->lens;
        op->fmts = p->fmts;
        op->types = p->types;
        c->cur = op;
        int rc = send_request(c, op);
        if (rc > 0) {
            op_finish(op); /* refused before anything was sent: the task hears it at once */
        } else if (rc < 0) {
            c->cur = NULL;
            char *m = scrubbed(PQerrorMessage(c->pg), c->secret);
            bool bad = PQstatus(c->pg) == CONNECTION_BAD;
            op->c = NULL;
            fr_op_discard(op);
            if (bad)
                conn_lost(c, m);
            fr_error_push(L, "pg.08006", m ? m : "could not send the query", bad);
            free(m);
            return lua_error(L);
        }
        /* op->sql and op->vals point into the task's stack, which holds them while it waits:
         * a Parse is followed by the Execute, a dropped statement is re-prepared from them */
    } else {
        if (copy_request(op, sql, p) < 0) {
            op->c = NULL;
            fr_op_discard(op);
            return luaL_error(L, "out of memory");
        }
        op->queued = true;
        if (c->qtail)
            c->qtail->next = op;
        else
            c->qhead = op;
        c->qtail = op;
    }
    update_watch(c);
    return fr_op_wait(L, op);
}

/* conn:query(sql, ...) -> rows. Waits. $1.. parameters from the extra arguments. Raises a
 * pg.<SQLSTATE> error object on failure. */
static int l_query(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    fr_pg_params_t p;
    fr_pg_params_build(L, 3, lua_gettop(L) - 2, &p);
    return run_request(L, c, K_QUERY, sql, &p);
}

/* conn:exec(sql) -> rows of the last statement. Waits. Several statements, no parameters. */
static int l_exec(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    fr_pg_params_t p = {0, NULL, NULL, NULL, NULL};
    return run_request(L, c, K_EXEC, sql, &p);
}

/* conn:_copy_start(sql) -> "in" | "out", copy id (for _abort). Waits. */
static int l_copy_start(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    fr_pg_params_t p = {0, NULL, NULL, NULL, NULL};
    int n = run_request(L, c, K_COPY_START, sql, &p);
    return n;
}

static pgop_t *copy_op(lua_State *L, pgc_t *c, int kind, int copy_state)
{
    if (c->state == S_BROKEN)
        raise_broken(L, c);
    if (c->copy != copy_state)
        luaL_error(L, "pg: no COPY %s in progress on this connection",
                   copy_state == COPY_IN ? "FROM STDIN" : "TO STDOUT");
    if (c->cur)
        luaL_error(L, "pg: the connection is busy (another task uses it during COPY)");
    pgop_t *op = fr_op_new(L, sizeof *op, &copy_vt);
    op->kind = kind;
    op->c = c;
    return op;
}

/* conn:_copy_put(data): hands COPY data to libpq; waits only when its buffer is full. */
static int l_copy_put(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (c->state == S_BROKEN)
        return raise_broken(L, c);
    if (c->copy != COPY_IN)
        return luaL_error(L, "pg: no COPY FROM STDIN in progress on this connection");
    if (!c->cur) {
        int r = PQputCopyData(c->pg, data, (int)len);
        if (r < 0) {
            if (!copy_in_ended(c))
                return raise_broken(L, c);
            /* the server rejected the COPY already: its error is the answer */
            pgop_t *op = fr_op_new(L, sizeof *op, &query_vt);
            op->kind = K_COPY_END;
            op->end_sent = true;
            op->c = c;
            c->cur = op;
            collect(c, op);
            if (!op->c)
                start_next(c);
            update_watch(c);
            return fr_op_wait(L, op);
        }
        if (r == 1) {
            int f = PQflush(c->pg);
            if (f < 0) {
                conn_lost(c, NULL);
                return raise_broken(L, c);
            }
            c->want_flush = f == 1;
            if (!c->want_flush)
                return 0;
            data = NULL;
        }
    }
    pgop_t *op = copy_op(L, c, K_COPY_PUT, COPY_IN);
    if (data) {
        op->buf = malloc(len ? len : 1);
        if (!op->buf) {
            op->c = NULL;
            fr_op_discard(op);
            return luaL_error(L, "out of memory");
        }
        memcpy(op->buf, data, len);
        op->len = len;
        c->want_flush = true;
    }
    c->cur = op;
    update_watch(c);
    return fr_op_wait(L, op);
}

/* conn:_copy_end([errmsg]) -> rows copied. Waits. With errmsg the COPY fails on the server. */
static int l_copy_end(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    const char *msg = luaL_optstring(L, 2, NULL);
    pgop_t *op = copy_op(L, c, K_COPY_END, COPY_IN);
    op->end_msg = msg; /* the argument stays on the task's stack until we send it */
    c->cur = op;
    op_step(c, op, 0);
    if (op->c)
        update_watch(c);
    return fr_op_wait(L, op);
}

/* conn:_copy_get() -> array of rows | false (call again) | nil, rows copied. Waits. */
static int l_copy_get(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    if (c->state == S_BROKEN)
        return raise_broken(L, c);
    if (c->copy == COPY_OUT) {
        lua_newtable(L);
        int n = 0, r = 0;
        char *b;
        while (n < 4096 && (r = PQgetCopyData(c->pg, &b, 1)) > 0) {
            lua_pushlstring(L, b, (size_t)r);
            PQfreemem(b);
            lua_rawseti(L, -2, ++n);
        }
        if (r == -2) {
            conn_lost(c, NULL);
            return raise_broken(L, c);
        }
        if (r == -1) { /* the data is all there; the command's result follows */
            c->copy = COPY_NONE;
            c->copy_ended = true;
        }
        if (n > 0)
            return 1;
        lua_pop(L, 1);
        if (r == 0) {
            pgop_t *op = copy_op(L, c, K_COPY_GET, COPY_OUT);
            c->cur = op;
            update_watch(c);
            return fr_op_wait(L, op);
        }
    }
    if (!c->copy_ended)
        return luaL_error(L, "pg: no COPY TO STDOUT in progress on this connection");
    c->copy_ended = false;
    pgop_t *op = fr_op_new(L, sizeof *op, &query_vt);
    op->kind = K_COPY_END;
    op->end_sent = true;
    op->get_end = true;
    op->c = c;
    c->cur = op;
    collect(c, op);
    if (!op->c)
        start_next(c);
    update_watch(c);
    return fr_op_wait(L, op);
}

/* conn:_abort(copy id): leave that COPY without waiting (the connection drains in the
 * background); nothing when that COPY is already over. */
static int l_abort(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    if (luaL_checkinteger(L, 2) != c->copy_id)
        return 0; /* that COPY is over; another may be running now */
    if (c->state == S_READY && (c->copy != COPY_NONE || c->copy_ended) && !c->cur && !c->draining) {
        c->copy_ended = false;
        start_drain(c, c->copy == COPY_OUT);
    }
    return 0;
}

/* conn:wait_notify([timeout]) -> {channel=, payload=, pid=} | nil on timeout. Waits. */
static int l_wait_notify(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    double timeout = lua_isnoneornil(L, 2) ? HUGE_VAL : fr_duration_arg(L, 2, "conn:wait_notify");
    if (c->nhead) {
        push_note(L, c);
        return 1;
    }
    if (c->state == S_BROKEN)
        return raise_broken(L, c);
    if (c->waiter)
        return luaL_error(L, "pg: another task already waits for notifications on this "
                             "connection");
    pgop_t *op = fr_op_new(L, sizeof *op, &notify_vt);
    op->kind = K_NOTIFY;
    op->c = c;
    op->nc = c;
    c->refs++;
    c->waiter = op;
    if (timeout < HUGE_VAL)
        fr_timer_start(&op->base, fr_now() + timeout);
    update_watch(c);
    lua_settop(L, 1);
    return fr_op_wait(L, op);
}

static int l_close(lua_State *L)
{
    connbox_t *b = luaL_checkudata(L, 1, CONN_MT);
    pgc_t *c = b->c;
    if (c) {
        b->c = NULL;
        conn_close(c);
        conn_unref(c);
    }
    return 0;
}

static const char *state_name(pgc_t *c)
{
    switch (c->state) {
    case S_READY:
        return c->cur || c->qhead || c->phead || c->draining || c->copy || c->copy_ended ? "busy"
                                                                                         : "ready";
    case S_BROKEN:
        return "broken";
    case S_CONNECTING:
        return "connecting";
    default:
        return "closed";
    }
}

/* conn:status() -> "ready" | "busy" | "broken" | "closed" */
static int l_status(lua_State *L)
{
    connbox_t *b = luaL_checkudata(L, 1, CONN_MT);
    if (!b->c) {
        lua_pushliteral(L, "closed");
        return 1;
    }
    pgc_t *c = b->c;
    if (c->state == S_READY && PQstatus(c->pg) == CONNECTION_BAD)
        conn_lost(c, NULL);
    lua_pushstring(L, state_name(c));
    return 1;
}

/* conn:transaction_status() -> "idle" | "active" | "intrans" | "inerror" | "unknown" */
static int l_txstatus(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    static const char *const names[] = {"idle", "active", "intrans", "inerror", "unknown"};
    PGTransactionStatusType t = c->pg ? PQtransactionStatus(c->pg) : PQTRANS_UNKNOWN;
    lua_pushstring(L, names[t <= PQTRANS_UNKNOWN ? t : PQTRANS_UNKNOWN]);
    return 1;
}

/* conn:pipeline(on) -> previous setting. In pipeline mode conn:query sends at once, even while
 * other tasks' statements on this connection are still running, each with its own Sync (an
 * error fails only its own statement). conn:exec, COPY and conn:transaction are not available
 * then; a cancelled task's statement is not cancelled on the server (its result is dropped). */
static int l_pipeline(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    bool on = lua_toboolean(L, 2);
    lua_pushboolean(L, c->pipe);
    if (on == c->pipe)
        return 1;
    if (c->state != S_READY)
        return raise_broken(L, c);
    if (c->cur || c->qhead || c->phead || c->draining || c->copy || c->copy_ended)
        return luaL_error(L, "pg: conn:pipeline: the connection is busy");
    if (!(on ? PQenterPipelineMode(c->pg) : PQexitPipelineMode(c->pg)))
        return luaL_error(L, "pg: conn:pipeline: %s", PQerrorMessage(c->pg));
    c->pipe = on;
    return 1;
}

/* conn:numeric([mode]) -> previous mode. "string" (default): numeric values come as exact
 * strings; "number": as Lua numbers (integers when they fit, else floats: may round). */
static int l_numeric(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    static const char *const modes[] = {"string", "number", NULL};
    lua_pushstring(L, modes[c->numeric_number]);
    if (!lua_isnoneornil(L, 2))
        c->numeric_number = luaL_checkoption(L, 2, NULL, modes) == 1;
    return 1;
}

/* conn:cancel_timeout([seconds]) -> previous value. How long a cancelled statement may take to
 * stop (the server answering the cancel request) before the connection is closed instead;
 * 0 or math.huge: wait for ever; NaN or negative raises. Default 30. */
static int l_cancel_timeout(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    lua_pushnumber(L, c->cancel_timeout);
    if (!lua_isnoneornil(L, 2)) {
        c->cancel_timeout = fr_duration_arg(L, 2, "conn:cancel_timeout");
    }
    return 1;
}

/* conn:statement_cache([n [, prepare_from]]) -> previous n, previous prepare_from. Prepare at
 * most n statements on this connection (0: none, for poolers in transaction mode), each from
 * its prepare_from-th run (1: at once). In pipeline mode a statement is prepared at its first
 * run whatever prepare_from says: there the Parse costs no round trip. */
static int l_statement_cache(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, c->stmt_max);
    lua_Integer from = luaL_optinteger(L, 3, c->prepare_from);
    luaL_argcheck(L, n >= 0 && n <= 100000, 2, "expected 0 .. 100000");
    luaL_argcheck(L, from >= 1 && from <= 1000000, 3, "expected 1 .. 1000000");
    lua_pushinteger(L, c->stmt_max);
    lua_pushinteger(L, c->prepare_from);
    c->stmt_max = (int)n;
    c->prepare_from = (int)from;
    return 2;
}

static int l_backend_pid(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    lua_pushinteger(L, PQbackendPID(c->pg));
    return 1;
}

static int l_server_version(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    lua_pushinteger(L, PQserverVersion(c->pg));
    return 1;
}

static int l_parameter(lua_State *L)
{
    pgc_t *c = check_conn(L, 1);
    const char *v = PQparameterStatus(c->pg, luaL_checkstring(L, 2));
    lua_pushstring(L, v);
    return 1;
}

static int l_tostring(lua_State *L)
{
    connbox_t *b = luaL_checkudata(L, 1, CONN_MT);
    if (!b->c)
        lua_pushliteral(L, "pg.conn (closed)");
    else
        lua_pushfstring(L, "pg.conn %s (%s)", b->c->desc, state_name(b->c));
    return 1;
}

/* ---- connecting ---------------------------------------------------------------------------
 * libpq resolves host names with a blocking getaddrinfo inside PQconnectPoll. So a single host
 * name is resolved first with uv_getaddrinfo (on libuv's thread pool) and handed to libpq as
 * hostaddr, one entry per address (host repeated, so libpq still tries them in turn and
 * verifies TLS and looks up .pgpass by the name). */

static void free_opts(pgc_t *c)
{
    for (int i = 0; i < c->nopts; i++) {
        free(c->okw[i]);
        free(c->oval[i]);
    }
    free(c->okw);
    free(c->oval);
    c->okw = c->oval = NULL;
    c->nopts = 0;
}

static const char *opt_get(pgc_t *c, const char *kw)
{
    for (int i = 0; i < c->nopts; i++)
        if (strcmp(c->okw[i], kw) == 0)
            return c->oval[i];
    return NULL;
}

static bool opt_set(pgc_t *c, const char *kw, const char *val)
{
    for (int i = 0; i < c->nopts; i++) {
        if (strcmp(c->okw[i], kw) == 0) {
            char *v = strdup(val);
            if (!v)
                return false;
            free(c->oval[i]);
            c->oval[i] = v;
            return true;
        }
    }
    char **k = realloc(c->okw, sizeof(char *) * (size_t)(c->nopts + 2));
    if (!k)
        return false;
    c->okw = k;
    char **v = realloc(c->oval, sizeof(char *) * (size_t)(c->nopts + 2));
    if (!v)
        return false;
    c->oval = v;
    c->okw[c->nopts] = strdup(kw);
    c->oval[c->nopts] = strdup(val);
    if (!c->okw[c->nopts] || !c->oval[c->nopts]) {
        free(c->okw[c->nopts]);
        free(c->oval[c->nopts]);
        return false;
    }
    c->nopts++;
    c->okw[c->nopts] = c->oval[c->nopts] = NULL;
    return true;
}

static void set_desc(pgc_t *c)
{
    const char *host = PQhost(c->pg), *port = PQport(c->pg), *db = PQdb(c->pg),
               *user = PQuser(c->pg);
    size_t n = 16 + strlen(host ? host : "") + strlen(port ? port : "") + strlen(db ? db : "") +
               strlen(user ? user : "");
    char *d = malloc(n);
    if (d) {
        snprintf(d, n, "%s@%s:%s/%s", user ? user : "", host ? host : "", port ? port : "",
                 db ? db : "");
        char *sd = scrubbed(d, c->secret);
        free(d);
        d = sd;
    }
    if (d) {
        free(c->desc);
        c->desc = d;
    }
}

static void start_connect(pgc_t *c)
{
    /* results are converted from text: dates must come in ISO style, text in UTF-8. An
     * explicit setting (conninfo or PG* variable) wins. */
    const char *opts = opt_get(c, "options");
    if (!opts)
        opts = getenv("PGOPTIONS");
    bool ok = true;
    if (!opts || !strcasestr(opts, "datestyle")) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s%s-c DateStyle=ISO,MDY", opts ? opts : "",
                 opts && *opts ? " " : "");
        ok = opt_set(c, "options", buf);
    }
    if (ok && !opt_get(c, "client_encoding") && !getenv("PGCLIENTENCODING"))
        ok = opt_set(c, "client_encoding", "UTF8");
    if (ok && !opt_get(c, "application_name") && !getenv("PGAPPNAME"))
        ok = opt_set(c, "application_name", "flowrun");
    if (!ok || (opts && strlen(opts) > 900)) {
        connect_fail(c, !ok ? "out of memory" : "the options connection parameter is too long");
        return;
    }
    c->pg = PQconnectStartParams((const char *const *)c->okw, (const char *const *)c->oval, 0);
    if (!c->pg) {
        free_opts(c);
        connect_fail(c, "out of memory");
        return;
    }
    set_desc(c);
    free_opts(c);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        connect_fail(c, PQerrorMessage(c->pg));
        return;
    }
    PGLOG("connecting to %s", c->desc);
    int fd = PQsocket(c->pg);
    if (fd < 0 || watch_fd(c, fd, UV_WRITABLE) < 0)
        connect_step(c);
}

typedef struct {
    uv_getaddrinfo_t req;
    pgc_t *c;
} resolve_t;

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *r = (resolve_t *)req;
    pgc_t *c = r->c;
    free(r);
    if (c->connect_op && c->state == S_CONNECTING) {
        const char *host = opt_get(c, "host");
        if (status < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "could not translate host name \"%.200s\" to address: %s",
                     host ? host : "", uv_strerror(status));
            connect_fail(c, msg);
        } else {
            char addrs[8 * 48], hosts[8 * 256];
            size_t na = 0, nh = 0;
            int count = 0;
            addrs[0] = hosts[0] = 0;
            for (struct addrinfo *a = res; a && count < 8; a = a->ai_next) {
                char ip[46];
                if (a->ai_family == AF_INET)
                    uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof ip);
                else if (a->ai_family == AF_INET6)
                    uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, ip, sizeof ip);
                else
                    continue;
                if (strstr(addrs, ip)) /* once per address (one per socket type) */
                    continue;
                na += (size_t)snprintf(addrs + na, sizeof addrs - na, "%s%s", count ? "," : "", ip);
                nh += (size_t)snprintf(hosts + nh, sizeof hosts - nh, "%s%.200s", count ? "," : "",
                                       host);
                count++;
            }
            if (count == 0)
                connect_fail(c, "could not translate host name to an address");
            else if (!opt_set(c, "hostaddr", addrs) || !opt_set(c, "host", hosts))
                connect_fail(c, "out of memory");
            else {
                start_connect(c);
            }
        }
    }
    if (res)
        uv_freeaddrinfo(res);
    conn_unref(c);
}

/* A single host name that only a resolver can turn into an address. */
static bool needs_resolving(const char *host)
{
    if (!host || !*host || host[0] == '/' || host[0] == '@' || strchr(host, ','))
        return false;
    unsigned char buf[16];
    if (inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1)
        return false;
    return true;
}

/* ---- a conninfo string libpq refuses: its message without the password -------------------
 * libpq's parse errors quote pieces of the string, the whole of it for some URL errors. The
 * string is copied with every password value (any key holding "password", in any case; the
 * password of a URL's user:password@) replaced by ***, and the copy parsed again: its error is
 * the same one, and holds no password. When the copy parses, the error was in the password
 * itself, and nothing more is said. */

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}

static bool names_password(const char *k, size_t n)
{
    for (size_t i = 0; i + 8 <= n; i++)
        if (strncasecmp(k + i, "password", 8) == 0)
            return true;
    return false;
}

/* Append s[0..n) to out (sized by the caller: the copy is never longer than the original plus
 * three bytes per password). */
static void put(char **o, const char *s, size_t n)
{
    memcpy(*o, s, n);
    *o += n;
}

static void redact_kv(const char *ci, char *out)
{
    const char *p = ci, *copied = ci;
    char *o = out;
    for (;;) {
        while (*p && is_space(*p))
            p++;
        if (!*p)
            break;
        const char *key = p;
        while (*p && !is_space(*p) && *p != '=')
            p++;
        size_t klen = (size_t)(p - key);
        while (*p && is_space(*p))
            p++;
        if (*p != '=')
            break; /* libpq stops here too: the rest is copied as it is */
        p++;
        while (*p && is_space(*p))
            p++;
        const char *val = p;
        bool quoted = *p == '\'';
        if (quoted) {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p)
                p++;
        } else {
            for (; *p && !is_space(*p); p++)
                if (*p == '\\' && p[1])
                    p++;
        }
        if (!names_password(key, klen))
            continue;
        if (!quoted) {
            /* a space left unquoted in a password ends the value where libpq sees it end, and
             * its next word then shows in the error: words that are not a "key =" are taken
             * as the password's */
            for (;;) {
                const char *q = p;
                while (*q && is_space(*q))
                    q++;
                if (!*q)
                    break;
                const char *w = q;
                while (*q && !is_space(*q) && *q != '=')
                    q++;
                const char *after = q;
                while (*after && is_space(*after))
                    after++;
                if (*after == '=' || q == w)
                    break;
                p = q;
            }
        }
        put(&o, copied, (size_t)(val - copied));
        put(&o, "***", 3);
        copied = p;
    }
    put(&o, copied, strlen(copied));
    *o = 0;
}

static void redact_url(const char *ci, size_t prefix, char *out)
{
    const char *auth = ci + prefix, *p = auth;
    char *o = out;
    while (*p && *p != '@' && *p != '/')
        p++;
    const char *at = *p == '@' ? p : NULL;
    if (!at && *p == '/') { /* a '/' left unencoded in the password: user:pa/ss@host */
        const char *q = p;
        while (*q && *q != '@' && *q != '?')
            q++;
        if (*q == '@')
            at = q;
    }
    const char *copied = ci;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (colon && colon + 1 < at) {
            put(&o, copied, (size_t)(colon + 1 - copied));
            put(&o, "***", 3);
            copied = at;
        }
    }
    /* query parameters: ?password=...&sslpassword=... */
    const char *q = strchr(at ? at : auth, '?');
    while (q) {
        const char *key = q + 1, *eq = key;
        while (*eq && *eq != '=' && *eq != '&')
            eq++;
        const char *end = eq;
        while (*end && *end != '&')
            end++;
        /* the key may be percent-encoded */
        char k[64];
        size_t kn = 0;
        for (const char *c = key; c < eq && kn < sizeof k; c++) {
            int h, l;
            if (*c == '%' && c + 2 < eq && (h = fr_hexval(c[1])) >= 0 &&
                (l = fr_hexval(c[2])) >= 0) {
                k[kn++] = (char)(h << 4 | l);
                c += 2;
            } else {
                k[kn++] = *c;
            }
        }
        if (*eq == '=' && names_password(k, kn)) {
            put(&o, copied, (size_t)(eq + 1 - copied));
            put(&o, "***", 3);
            copied = end;
        }
        q = *end ? end : NULL;
    }
    put(&o, copied, strlen(copied));
    *o = 0;
}

/* A copy of conninfo with every password replaced by *** (malloc'd), or NULL (no memory). */
static char *conninfo_redacted(const char *ci)
{
    size_t n = strlen(ci);
    char *out = malloc(n + n / 2 * 3 + 8); /* at most one *** per two bytes of the original */
    if (!out)
        return NULL;
    if (strncmp(ci, "postgresql://", 13) == 0)
        redact_url(ci, 13, out);
    else if (strncmp(ci, "postgres://", 11) == 0)
        redact_url(ci, 11, out);
    else
        redact_kv(ci, out);
    return out;
}

/* "invalid connection string: <libpq's reason>", the password left out, pushed on the stack. */
static void push_conninfo_error(lua_State *L, const char *ci)
{
    char *red = conninfo_redacted(ci), *perr = NULL;
    PQconninfoOption *opts = red ? PQconninfoParse(red, &perr) : NULL;
    if (opts) {
        PQconninfoFree(opts);
        lua_pushliteral(L, "invalid connection string: the password value is malformed (details "
                           "withheld)");
    } else {
        char *m = scrubbed(perr ? perr : "out of memory", NULL);
        lua_pushfstring(L, "invalid connection string: %s", m ? m : "out of memory");
        free(m);
    }
    if (perr)
        PQfreemem(perr);
    free(red);
}

static int connect_error(lua_State *L, const char *msg)
{
    fr_error_push(L, "pg.08001", msg, false);
    return lua_error(L);
}

static bool known_keyword(const char *kw)
{
    bool known = false;
    PQconninfoOption *d = PQconndefaults();
    for (PQconninfoOption *o = d; o && o->keyword; o++)
        if (strcmp(o->keyword, kw) == 0)
            known = true;
    PQconninfoFree(d);
    return known;
}

/* pg.core.connect(conninfo) -> conn. Waits. conninfo: key=value string, postgresql:// URL or a
 * table of libpq keywords. Raises pg.08001 (or pg.28P01 ... when the server said why). */
static int l_connect(lua_State *L)
{
    int t = lua_type(L, 1);
    if (t != LUA_TSTRING && t != LUA_TTABLE)
        return luaL_argerror(L, 1, "expected a conninfo string, a postgresql:// URL or a table");
    lua_settop(L, 1);
    lua_newtable(L); /* 2: keyword, value, keyword, value ... as Lua strings */
    int n = 0;
    if (t == LUA_TSTRING) {
        const char *ci = lua_tostring(L, 1);
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(ci, &perr);
        if (!opts) {
            if (perr)
                PQfreemem(perr); /* it may quote the password: the redacted copy's is used */
            push_conninfo_error(L, ci);
            return connect_error(L, lua_tostring(L, -1));
        }
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (!o->val)
                continue;
            lua_pushstring(L, o->keyword);
            lua_rawseti(L, 2, ++n);
            lua_pushstring(L, o->val);
            lua_rawseti(L, 2, ++n);
        }
        PQconninfoFree(opts);
    } else {
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                return luaL_error(L, "pg.connect: table keys must be libpq keywords (strings)");
            const char *kw = lua_tostring(L, -2);
            /* check the keywords before libpq does, so no value ever reaches a message */
            if (!known_keyword(kw)) {
                lua_pushfstring(L, "invalid connection option \"%s\"", kw);
                return connect_error(L, lua_tostring(L, -1));
            }
            lua_pushvalue(L, -2);
            lua_rawseti(L, 2, ++n);
            luaL_tolstring(L, -1, NULL);
            lua_rawseti(L, 2, ++n);
            lua_pop(L, 1);
        }
    }
    pgop_t *op = fr_op_new(L, sizeof *op, &connect_vt); /* raises when no task can wait */
    pgc_t *c = calloc(1, sizeof *c);
    if (!c) {
        fr_op_discard(op);
        return luaL_error(L, "out of memory");
    }
    c->fd = -1;
    c->refs = 1;
    c->stmt_max = 0; /* lua/pg sets its policy */
    c->prepare_from = 2;
    c->cancel_timeout = 30;
    c->state = S_CONNECTING;
    c->next_all = all_conns;
    if (all_conns)
        all_conns->prev_all = c;
    all_conns = c;
    op->kind = K_CONNECT;
    op->c = c;
    c->connect_op = op;
    bool ok = true;
    for (int i = 1; i <= n && ok; i += 2) {
        lua_rawgeti(L, 2, i);
        lua_rawgeti(L, 2, i + 1);
        const char *kw = lua_tostring(L, -2), *val = lua_tostring(L, -1);
        ok = opt_set(c, kw, val);
        if (ok && strcmp(kw, "password") == 0 && *val && !c->secret)
            ok = (c->secret = strdup(val)) != NULL;
        lua_pop(L, 2);
    }
    const char *host = opt_get(c, "host");
    if (!host)
        host = getenv("PGHOST");
    const char *hostaddr = opt_get(c, "hostaddr");
    if (!hostaddr)
        hostaddr = getenv("PGHOSTADDR");
    c->desc = strdup(host ? host : "(default)");
    /* libpq leaves connect_timeout to the application in non-blocking mode: a timer over the
     * whole connect (resolving and every address) */
    const char *ct = opt_get(c, "connect_timeout");
    if (!ct)
        ct = getenv("PGCONNECT_TIMEOUT");
    if (ct && atoi(ct) > 0)
        fr_timer_start(&op->base, fr_now() + (atoi(ct) < 2 ? 2 : atoi(ct)));
    if (!ok || !c->desc) {
        connect_fail(c, "out of memory");
    } else if (needs_resolving(host) && !(hostaddr && *hostaddr)) {
        resolve_t *r = calloc(1, sizeof *r);
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        if (!r || !opt_set(c, "host", host)) {
            free(r);
            connect_fail(c, "out of memory");
        } else {
            r->c = c;
            int rc =
                uv_getaddrinfo(fr_loop(), &r->req, on_resolved, opt_get(c, "host"), NULL, &hints);
            if (rc < 0) {
                free(r);
                connect_fail(c, uv_strerror(rc));
            } else {
                c->refs++;
                PGLOG("resolving %s", c->desc);
            }
        }
    } else {
        start_connect(c);
    }
    return fr_op_wait(L, op);
}

/* ---- a waiter: one task parks until another wakes it (the pool's queue) -------------------- */

typedef struct {
    bool woken;
    fr_op_t *op;
} waiter_t;

typedef struct {
    fr_op_t base;
    waiter_t *w;
    bool woken;
} waitop_t;

static bool waitop_cancel(fr_op_t *base)
{
    waitop_t *op = (waitop_t *)base;
    if (op->w && op->w->op == base)
        op->w->op = NULL;
    op->w = NULL;
    return true;
}

static void waitop_free(fr_op_t *base)
{
    waitop_cancel(base);
}

static int waitop_results(lua_State *L, fr_op_t *base)
{
    lua_pushboolean(L, ((waitop_t *)base)->woken);
    return 1;
}

static const fr_op_vt_t waiter_vt = {"pg.pool.wait", waitop_results, waitop_cancel, waitop_free,
                                     false};

/* pg.core.waiter() -> w: w:wait([timeout]) parks the task until w:wake() (true) or the timeout
 * (false); a wake before the wait is not lost. */
static int l_waiter(lua_State *L)
{
    waiter_t *w = lua_newuserdatauv(L, sizeof *w, 0);
    w->woken = false;
    w->op = NULL;
    luaL_setmetatable(L, WAITER_MT);
    return 1;
}

static int l_waiter_wait(lua_State *L)
{
    waiter_t *w = luaL_checkudata(L, 1, WAITER_MT);
    double timeout = lua_isnoneornil(L, 2) ? HUGE_VAL : fr_duration_arg(L, 2, "waiter:wait");
    if (w->woken) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (w->op)
        return luaL_error(L, "pg: a waiter can have only one task waiting");
    waitop_t *op = fr_op_new(L, sizeof *op, &waiter_vt);
    op->w = w;
    w->op = &op->base;
    if (timeout < HUGE_VAL)
        fr_timer_start(&op->base, fr_now() + timeout);
    return fr_op_wait(L, op);
}

static int l_waiter_wake(lua_State *L)
{
    waiter_t *w = luaL_checkudata(L, 1, WAITER_MT);
    w->woken = true;
    if (w->op) {
        waitop_t *op = (waitop_t *)w->op;
        w->op = NULL;
        op->w = NULL;
        op->woken = true;
        if (op->base.heap_index >= 0)
            fr_timer_stop(&op->base);
        fr_op_complete(op);
    }
    return 0;
}

static int l_waiter_tostring(lua_State *L)
{
    waiter_t *w = luaL_checkudata(L, 1, WAITER_MT);
    lua_pushfstring(L, "pg.waiter (%s)", w->woken ? "woken" : w->op ? "waited on" : "idle");
    return 1;
}

static int l_bytea_mt(lua_State *L)
{
    fr_pg_push_bytea_mt(L);
    return 1;
}

static void close_all(void)
{
    for (pgc_t *c = all_conns; c; c = c->next_all)
        conn_close(c);
}

int luaopen_pg_core(lua_State *L)
{
    static bool registered;
    if (!registered) {
        registered = true;
        fr_at_shutdown(close_all);
    }

    static const luaL_Reg conn_methods[] = {
        {"query", l_query},
        {"exec", l_exec},
        {"close", l_close},
        {"status", l_status},
        {"transaction_status", l_txstatus},
        {"backend_pid", l_backend_pid},
        {"statement_cache", l_statement_cache},
        {"pipeline", l_pipeline},
        {"numeric", l_numeric},
        {"cancel_timeout", l_cancel_timeout},
        {"server_version", l_server_version},
        {"parameter", l_parameter},
        {"wait_notify", l_wait_notify},
        {"_copy_start", l_copy_start},
        {"_copy_put", l_copy_put},
        {"_copy_end", l_copy_end},
        {"_copy_get", l_copy_get},
        {"_abort", l_abort},
        {NULL, NULL},
    };
    luaL_newmetatable(L, CONN_MT);
    luaL_newlib(L, conn_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, CONN_MT);
    lua_setfield(L, -2, "__name");
    lua_getfield(L, -1, "methods");
    lua_remove(L, -2);
    int methods = lua_gettop(L);

    static const luaL_Reg waiter_methods[] = {
        {"wait", l_waiter_wait},
        {"wake", l_waiter_wake},
        {NULL, NULL},
    };
    luaL_newmetatable(L, WAITER_MT);
    luaL_newlib(L, waiter_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_waiter_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    static const luaL_Reg funcs[] = {
        {"connect", l_connect},
        {"waiter", l_waiter},
        {"bytea_mt", l_bytea_mt},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    lua_pushvalue(L, methods);
    lua_setfield(L, -2, "conn_methods");
    fr_json_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}

FR_MODULE("pg.core", luaopen_pg_core)
