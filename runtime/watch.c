/*
 * watch.c — waiting for changes in directories, module "flow.watch": a watcher is a set of
 * libuv fs-event handles (inotify on Linux) and a queue of what they saw, which one task waits
 * on; any task may also wake it. The scheduler sleeps on one until the next fire time, a
 * workflow file changes, or another task has news (a pause, a run that ended), so it never has
 * to poll.
 *
 *   local watch = require "flow.watch"
 *   local w = watch.new()
 *   w:add(dir)                -> true | nil, err    entries of dir (not its subdirectories), or
 *                                                   a file; err.code "sys.ENOENT" and the like
 *   w:wait([timeout])         -> changes, woken     waits until something changed, w:wake() or
 *                                                   the timeout (seconds; nil: until then)
 *       changes: a list of {dir = the path given to add, name = the entry (nil when unknown)},
 *       oldest first; changes.overflow = true when more than MAX_EVENTS came between two waits
 *       (the rest were dropped: look at everything again), or a handle reported an error.
 *       woken: whether w:wake() was called since the last wait. What happened before a wait
 *       is not lost: the wait returns at once.
 *   w:wake()                  makes the pending (or the next) wait return
 *   w:close()                 stops watching; a task waiting returns at once. Also __gc, __close.
 *
 * Ownership: the userdata points to a heap `core` shared with the fs-event handles (each malloc'd
 * and freed in its close callback) and the op of the waiting task; the core is freed once the
 * userdata is closed and the last handle's close callback has run. Callbacks make no Lua call:
 * they queue the event and complete the op (the wait contract in flowrun.h).
 *
 * The handles are referenced only while a task waits, so an idle watcher does not keep the
 * process alive, and a task waiting on one with no timeout is not a deadlock (a change can come).
 * The wait is not I/O for virtual time: the clock still jumps to the next timer while a task
 * waits here (a test's own file changes happen in its tasks).
 */
#include "flowrun.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WATCHER_MT "flowrun.watch.watcher"
#define MAX_EVENTS 4096

typedef struct event {
    struct event *next;
    int dir;    /* index of the path given to add */
    char *name; /* NULL when libuv did not say */
} event_t;

typedef struct core core_t;

typedef struct handle {
    uv_fs_event_t h;
    core_t *core;
    int dir;
} handle_t;

typedef struct {
    fr_op_t base;
    core_t *core;
} waitop_t;

struct core {
    char **dirs; /* the paths given to add, in order */
    handle_t **handles;
    int n, cap;
    int open_handles; /* handles not yet through their close callback */
    event_t *head, *tail;
    int nevents;
    bool overflow, woken, closed;
    waitop_t *op; /* the waiting task's op while it is pending, or NULL */
    int op_refs;  /* ops that point here (until they are freed) */
};

typedef struct {
    core_t *core; /* NULL once closed */
} watcher_t;

static void core_free_if_done(core_t *c)
{
    if (!c->closed || c->open_handles > 0 || c->op_refs > 0)
        return;
    event_t *e = c->head;
    while (e) {
        event_t *next = e->next;
        free(e->name);
        free(e);
        e = next;
    }
    for (int i = 0; i < c->n; i++)
        free(c->dirs[i]);
    free(c->dirs);
    free(c->handles);
    free(c);
}

/* The waiting task's handles stop keeping the loop alive once nobody waits. */
static void set_ref(core_t *c, bool on)
{
    for (int i = 0; i < c->n; i++) {
        if (!c->handles[i])
            continue;
        uv_handle_t *h = (uv_handle_t *)&c->handles[i]->h;
        if (uv_is_closing(h))
            continue;
        if (on)
            uv_ref(h);
        else
            uv_unref(h);
    }
}

/* Completes the waiting op, if any (from a callback, wake or close). */
static void finish_wait(core_t *c)
{
    waitop_t *op = c->op;
    if (!op)
        return;
    c->op = NULL;
    set_ref(c, false);
    if (op->base.heap_index >= 0)
        fr_timer_stop(&op->base);
    fr_op_complete(op);
}

static void on_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)events;
    handle_t *hd = (handle_t *)h;
    core_t *c = hd->core;
    if (status < 0 || c->nevents >= MAX_EVENTS) {
        c->overflow = true;
    } else {
        event_t *e = calloc(1, sizeof *e);
        char *name = filename ? strdup(filename) : NULL;
        if (!e || (filename && !name)) {
            free(e);
            free(name);
            c->overflow = true; /* out of memory: the caller looks at everything again */
        } else {
            e->dir = hd->dir;
            e->name = name;
            if (c->tail)
                c->tail->next = e;
            else
                c->head = e;
            c->tail = e;
            c->nevents++;
        }
    }
    finish_wait(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    handle_t *hd = (handle_t *)h;
    core_t *c = hd->core;
    free(hd);
    c->open_handles--;
    core_free_if_done(c);
}

static void close_core(watcher_t *w)
{
    core_t *c = w->core;
    if (!c)
        return;
    w->core = NULL;
    c->closed = true;
    finish_wait(c);
    for (int i = 0; i < c->n; i++) {
        if (c->handles[i]) {
            uv_fs_event_stop(&c->handles[i]->h);
            uv_close((uv_handle_t *)&c->handles[i]->h, on_handle_closed);
            c->handles[i] = NULL;
        }
    }
    core_free_if_done(c);
}

static core_t *check_open(lua_State *L)
{
    watcher_t *w = luaL_checkudata(L, 1, WATCHER_MT);
    if (!w->core)
        luaL_error(L, "flow.watch: the watcher is closed");
    return w->core;
}

/* watch.new() -> watcher, watching nothing yet. */
static int l_new(lua_State *L)
{
    watcher_t *w = lua_newuserdatauv(L, sizeof *w, 0);
    w->core = NULL; /* created closed, then the resource is acquired */
    luaL_setmetatable(L, WATCHER_MT);
    core_t *c = calloc(1, sizeof *c);
    if (!c)
        return luaL_error(L, "out of memory");
    w->core = c;
    return 1;
}

/* w:add(path) -> true | nil, err: watch a directory's entries (or a file). */
static int l_add(lua_State *L)
{
    core_t *c = check_open(L);
    const char *path = luaL_checkstring(L, 2);
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 4;
        char **dirs = realloc(c->dirs, cap * sizeof *dirs);
        if (!dirs)
            return luaL_error(L, "out of memory");
        c->dirs = dirs;
        handle_t **hs = realloc(c->handles, cap * sizeof *hs);
        if (!hs)
            return luaL_error(L, "out of memory");
        c->handles = hs;
        c->cap = cap;
    }
    handle_t *hd = calloc(1, sizeof *hd);
    char *copy = strdup(path);
    if (!hd || !copy) {
        free(hd);
        free(copy);
        return luaL_error(L, "out of memory");
    }
    uv_fs_event_init(fr_loop(), &hd->h);
    hd->core = c;
    hd->dir = c->n;
    int rc = uv_fs_event_start(&hd->h, on_event, path, 0);
    c->open_handles++;
    if (rc != 0) {
        free(copy);
        uv_close((uv_handle_t *)&hd->h, on_handle_closed);
        char name[64];
        uv_err_name_r(rc, name, sizeof name);
        lua_pushnil(L);
        lua_pushfstring(L, "sys.%s", name);
        lua_pushfstring(L, "watch %s: %s", path, uv_strerror(rc));
        fr_error_push(L, lua_tostring(L, -2), lua_tostring(L, -1), false);
        lua_replace(L, -3);
        lua_pop(L, 1);
        lua_pushstring(L, path);
        lua_setfield(L, -2, "path");
        return 2;
    }
    if (!c->op)
        uv_unref((uv_handle_t *)&hd->h);
    c->dirs[c->n] = copy;
    c->handles[c->n] = hd;
    c->n++;
    lua_pushboolean(L, 1);
    return 1;
}

/* The op lets go of the core (it was completed, cancelled or is being freed). */
static void waitop_release(waitop_t *op)
{
    core_t *c = op->core;
    if (!c)
        return;
    if (c->op == op) {
        c->op = NULL;
        set_ref(c, false);
    }
    op->core = NULL;
    c->op_refs--;
    core_free_if_done(c);
}

static bool waitop_cancel(fr_op_t *base)
{
    waitop_release((waitop_t *)base);
    return true;
}

static void waitop_free(fr_op_t *base)
{
    waitop_release((waitop_t *)base);
}

/* Moves the queued changes into a Lua list: changes, woken. */
static int push_changes(lua_State *L, core_t *c)
{
    lua_createtable(L, c ? c->nevents : 0, 1);
    bool woken = false;
    if (c) {
        int i = 0;
        for (event_t *e = c->head; e; e = e->next) {
            lua_createtable(L, 0, 2);
            lua_pushstring(L, c->dirs[e->dir]);
            lua_setfield(L, -2, "dir");
            if (e->name) {
                lua_pushstring(L, e->name);
                lua_setfield(L, -2, "name");
            }
            lua_rawseti(L, -2, ++i);
        }
        /* freed only once they are all in the table: out of memory above leaves them queued */
        event_t *e = c->head;
        while (e) {
            event_t *next = e->next;
            free(e->name);
            free(e);
            e = next;
        }
        c->head = c->tail = NULL;
        c->nevents = 0;
        if (c->overflow) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "overflow");
        }
        c->overflow = false;
        woken = c->woken;
        c->woken = false;
    }
    lua_pushboolean(L, woken);
    return 2;
}

static int waitop_results(lua_State *L, fr_op_t *base)
{
    waitop_t *op = (waitop_t *)base;
    core_t *c = op->core;
    int n = push_changes(L, c && !c->closed ? c : NULL);
    waitop_release(op);
    return n;
}

static const fr_op_vt_t wait_vt = {"watch.wait", waitop_results, waitop_cancel, waitop_free, false};

/* w:wait([timeout]) -> changes, woken. Waits (see the header). */
static int l_wait(lua_State *L)
{
    core_t *c = check_open(L);
    double timeout = lua_isnoneornil(L, 2) ? HUGE_VAL : fr_duration_arg(L, 2, "watcher:wait");
    if (c->op)
        return luaL_error(L, "flow.watch: a watcher can have only one task waiting");
    if (c->head || c->overflow || c->woken || timeout == 0)
        return push_changes(L, c);
    waitop_t *op = fr_op_new(L, sizeof *op, &wait_vt);
    op->core = c;
    c->op = op;
    c->op_refs++;
    set_ref(c, true);
    if (timeout < HUGE_VAL)
        fr_timer_start(&op->base, fr_now() + timeout);
    return fr_op_wait(L, op);
}

/* w:wake(): the pending or the next wait returns (woken = true). */
static int l_wake(lua_State *L)
{
    core_t *c = check_open(L);
    c->woken = true;
    finish_wait(c);
    return 0;
}

static int l_close(lua_State *L)
{
    watcher_t *w = luaL_checkudata(L, 1, WATCHER_MT);
    close_core(w);
    return 0;
}

static int l_tostring(lua_State *L)
{
    watcher_t *w = luaL_checkudata(L, 1, WATCHER_MT);
    if (!w->core)
        lua_pushliteral(L, "flow.watch.watcher (closed)");
    else
        lua_pushfstring(L, "flow.watch.watcher (%d path%s%s)", w->core->n,
                        w->core->n == 1 ? "" : "s", w->core->op ? ", waited on" : "");
    return 1;
}

static int luaopen_watch(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"add", l_add}, {"wait", l_wait}, {"wake", l_wake}, {"close", l_close}, {NULL, NULL},
    };
    luaL_newmetatable(L, WATCHER_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    static const luaL_Reg f[] = {
        {"new", l_new},
        {NULL, NULL},
    };
    luaL_newlib(L, f);
    return 1;
}

FR_MODULE("flow.watch", luaopen_watch)
