/*
 * proc.c — child processes on the loop (module "flow.proc"): uv_spawn with pipes for stdin,
 * stdout and stderr; the calling task waits while others run.
 *
 *   proc.run(argv, {stdin =, env =, clear_env =, cwd =, max_output =})
 *     -> {status =, signal =, stdout =, stderr =, truncated =, pid =}
 *   status is the exit code, nil when a signal ended the child (signal says which). The call
 *   returns once the child has exited and closed its output (as Python's communicate()).
 *
 * Cancelling the task terminates the child's process group (the child leads one): SIGTERM,
 * then SIGKILL after a grace period; the op is freed once the child has exited and every
 * handle is closed. Output still arriving 2 s after the exit (from something the child left
 * running) is not waited for.
 *
 * Ownership: the op owns its handles (process, three pipes, the grace timer) and its output
 * buffers; it is freed only after the last handle's close callback (the op is complete then).
 */
#include "flowrun.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

#define GRACE_MS 3000 /* SIGTERM, then SIGKILL after this */
#define DRAIN_MS 2000 /* after the exit, how long output may still arrive */
#define DEFAULT_MAX_OUTPUT (64 << 20)

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

typedef struct {
    fr_op_t base;
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_timer_t grace;
    uv_write_t write_req;
    char *input; /* a copy of the stdin data: it must outlive the write */
    size_t input_len;
    buf_t bout, berr;
    size_t max_output;
    bool truncated;
    int64_t status;
    int term_signal;
    int pid;
    int open_handles; /* closed when 0 */
    bool exited;
} proc_op_t;

static void on_close(uv_handle_t *h)
{
    proc_op_t *op = h->data;
    if (--op->open_handles == 0)
        fr_op_complete(op); /* frees a detached op */
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, on_close);
}

/* The child exited and both output pipes reached their end: close everything. */
static void maybe_finish(proc_op_t *op)
{
    if (!op->exited || !uv_is_closing((uv_handle_t *)&op->out) ||
        !uv_is_closing((uv_handle_t *)&op->err))
        return;
    close_handle((uv_handle_t *)&op->in);
    close_handle((uv_handle_t *)&op->grace);
    close_handle((uv_handle_t *)&op->proc);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    proc_op_t *op = h->data;
    buf_t *buf = h == (uv_handle_t *)&op->out ? &op->bout : &op->berr;
    if (buf->cap - buf->len < suggested) {
        size_t cap = buf->cap ? buf->cap * 2 : 65536;
        while (cap - buf->len < suggested)
            cap *= 2;
        char *d = realloc(buf->data, cap);
        if (!d) {
            b->base = NULL;
            b->len = 0;
            return;
        }
        buf->data = d;
        buf->cap = cap;
    }
    b->base = buf->data + buf->len;
    b->len = buf->cap - buf->len;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    proc_op_t *op = s->data;
    buf_t *buf = s == (uv_stream_t *)&op->out ? &op->bout : &op->berr;
    if (n > 0) {
        if (op->bout.len + op->berr.len + (size_t)n > op->max_output)
            op->truncated = true; /* keep reading (the child must not block), keep nothing */
        else
            buf->len += (size_t)n;
        return;
    }
    if (n < 0) { /* UV_EOF or an error: this stream is done */
        uv_read_stop(s);
        close_handle((uv_handle_t *)s);
        maybe_finish(op);
    }
}

/* The child exited but something it started still holds its output open: stop waiting. */
static void drain_cb(uv_timer_t *t)
{
    proc_op_t *op = t->data;
    close_handle((uv_handle_t *)&op->out);
    close_handle((uv_handle_t *)&op->err);
    maybe_finish(op);
}

static void exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
    proc_op_t *op = p->data;
    op->status = status;
    op->term_signal = term_signal;
    op->exited = true;
    uv_timer_start(&op->grace, drain_cb, DRAIN_MS, 0);
    maybe_finish(op);
}

static void write_cb(uv_write_t *req, int status)
{
    (void)status; /* a child that does not read its stdin is not an error */
    proc_op_t *op = req->data;
    close_handle((uv_handle_t *)&op->in);
}

/* The child leads its own process group (UV_PROCESS_DETACHED): signals go to the group, so
 * what a shell started dies with it. */
static void grace_cb(uv_timer_t *t)
{
    proc_op_t *op = t->data;
    if (!op->exited)
        uv_kill(-op->pid, SIGKILL);
}

static bool proc_cancel(fr_op_t *base)
{
    proc_op_t *op = (proc_op_t *)base;
    if (!op->exited) {
        uv_kill(-op->pid, SIGTERM);
        uv_timer_start(&op->grace, grace_cb, GRACE_MS, 0);
    }
    return false; /* the close callbacks are still due; on_close frees the op */
}

static void proc_free(fr_op_t *base)
{
    proc_op_t *op = (proc_op_t *)base;
    free(op->input);
    free(op->bout.data);
    free(op->berr.data);
}

static int proc_results(lua_State *L, fr_op_t *base)
{
    proc_op_t *op = (proc_op_t *)base;
    lua_createtable(L, 0, 6);
    if (!op->term_signal) { /* killed by a signal: status is nil, signal says which */
        lua_pushinteger(L, (lua_Integer)op->status);
        lua_setfield(L, -2, "status");
    } else {
        lua_pushinteger(L, op->term_signal);
        lua_setfield(L, -2, "signal");
    }
    lua_pushlstring(L, op->bout.data ? op->bout.data : "", op->bout.len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, op->berr.data ? op->berr.data : "", op->berr.len);
    lua_setfield(L, -2, "stderr");
    lua_pushboolean(L, op->truncated);
    lua_setfield(L, -2, "truncated");
    lua_pushinteger(L, op->pid);
    lua_setfield(L, -2, "pid");
    return 1;
}

static const fr_op_vt_t proc_vt = {"process", proc_results, proc_cancel, proc_free, true};

/* Strings for argv/env, collected on the Lua stack's behalf into one malloc'd block of
 * pointers; the strings themselves stay owned by Lua for the duration of uv_spawn. */
static char **string_list(lua_State *L, int idx, const char *what)
{
    int n = (int)luaL_len(L, idx);
    char **v = lua_newuserdatauv(L, sizeof(char *) * ((size_t)n + 1), 1); /* freed by GC */
    /* a number is converted to a new string that nothing else references: the userdata's user
     * value (a table) anchors those for as long as the list lives */
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_error(L, "%s[%d] must be a string", what, i);
        v[i - 1] = (char *)lua_tostring(L, -1);
        if (t == LUA_TNUMBER) {
            lua_getiuservalue(L, -2, 1);
            lua_pushvalue(L, -2);
            lua_rawseti(L, -2, i);
            lua_pop(L, 1);
        }
        lua_pop(L, 1); /* a string stays referenced by the table at idx or by the anchor */
    }
    v[n] = NULL;
    return v;
}

/* The child's environment: this process's (unless clear_env) with the table's entries over
 * it. Leaves a table of "K=V" strings on the stack (keeps them alive) and returns the list. */
static char **build_env(lua_State *L, int opts)
{
    lua_getfield(L, opts, "env");
    int envt = lua_gettop(L);
    lua_getfield(L, opts, "clear_env");
    bool clear = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_isnil(L, envt) && !clear) {
        lua_pop(L, 1);
        lua_newtable(L); /* placeholder, keeps the stack shape */
        return NULL;     /* inherit */
    }
    luaL_checktype(L, envt, LUA_TTABLE);
    lua_newtable(L); /* name -> "name=value" */
    int merged = lua_gettop(L);
    if (!clear) {
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (!eq)
                continue;
            lua_pushlstring(L, *e, (size_t)(eq - *e));
            lua_pushstring(L, *e);
            lua_settable(L, merged);
        }
    }
    lua_pushnil(L);
    while (lua_next(L, envt)) { /* key -2, value -1 */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "env keys must be strings");
        const char *k = lua_tostring(L, -2);
        lua_pushvalue(L, -2); /* merged[k] = ... */
        if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
            lua_pushnil(L); /* env = {NAME = false} removes NAME */
        } else {
            const char *v = luaL_tolstring(L, -2, NULL);
            lua_pushfstring(L, "%s=%s", k, v);
            lua_remove(L, -2); /* the tolstring result */
        }
        lua_settable(L, merged);
        lua_pop(L, 1); /* the value; the key stays for lua_next */
    }
    lua_newtable(L); /* array of the strings */
    int arr = lua_gettop(L);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, merged)) {
        lua_rawseti(L, arr, ++n);
    }
    lua_remove(L, merged);
    lua_remove(L, envt);
    return string_list(L, lua_gettop(L), "env");
}

/* proc.run(argv, opts) — see the header. Waits; nil and a "proc.spawn" error object when the
 * command cannot be started (not found, not executable). */
static int l_run(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    if (luaL_len(L, 1) < 1)
        return luaL_argerror(L, 1, "the command is empty");
    char **args = string_list(L, 1, "argv"); /* stack 3 */
    char **env = build_env(L, 2);            /* stack 4 (+5 when env given) */
    lua_getfield(L, 2, "cwd");
    const char *cwd = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 2, "stdin");
    size_t inlen = 0;
    const char *input = luaL_optlstring(L, -1, NULL, &inlen);
    lua_getfield(L, 2, "max_output");
    lua_Integer max_output = luaL_optinteger(L, -1, DEFAULT_MAX_OUTPUT);

    proc_op_t *op = fr_op_new(L, sizeof *op, &proc_vt);
    op->max_output = max_output > 0 ? (size_t)max_output : 0;
    if (input && inlen > 0) {
        op->input = malloc(inlen);
        if (!op->input) {
            fr_op_discard(op);
            return luaL_error(L, "out of memory");
        }
        memcpy(op->input, input, inlen);
        op->input_len = inlen;
    }
    uv_loop_t *loop = fr_loop();
    uv_pipe_init(loop, &op->in, 0);
    uv_pipe_init(loop, &op->out, 0);
    uv_pipe_init(loop, &op->err, 0);
    uv_timer_init(loop, &op->grace);
    op->in.data = op->out.data = op->err.data = op->grace.data = op->proc.data = op;
    op->write_req.data = op;
    op->open_handles = 5;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&op->in;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&op->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&op->err;
    uv_process_options_t po = {0};
    po.exit_cb = exit_cb;
    po.file = args[0];
    po.args = args;
    po.env = env;
    po.cwd = cwd;
    po.flags = UV_PROCESS_DETACHED; /* its own process group: see grace_cb */
    po.stdio_count = 3;
    po.stdio = stdio;
    int rc = uv_spawn(loop, &op->proc, &po);
    if (rc != 0) {
        /* the handles must still be closed: the op completes (and is freed) when they are */
        op->exited = true;
        op->open_handles = 5;
        uv_close((uv_handle_t *)&op->in, on_close);
        uv_close((uv_handle_t *)&op->out, on_close);
        uv_close((uv_handle_t *)&op->err, on_close);
        uv_close((uv_handle_t *)&op->grace, on_close);
        uv_close((uv_handle_t *)&op->proc, on_close);
        op->base.task = NULL; /* detached: on_close frees it */
        op->base.state = FR_OP_PENDING;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot run %s: %s", args[0], uv_strerror(rc));
        fr_error_push(L, "proc.spawn", lua_tostring(L, -1), false);
        lua_remove(L, -2);
        return 2;
    }
    op->pid = op->proc.pid;
    uv_read_start((uv_stream_t *)&op->out, alloc_cb, read_cb);
    uv_read_start((uv_stream_t *)&op->err, alloc_cb, read_cb);
    if (op->input) {
        uv_buf_t b = uv_buf_init(op->input, (unsigned)op->input_len);
        if (uv_write(&op->write_req, (uv_stream_t *)&op->in, &b, 1, write_cb) != 0)
            close_handle((uv_handle_t *)&op->in);
    } else {
        close_handle((uv_handle_t *)&op->in);
    }
    return fr_op_wait(L, op);
}

static int luaopen_proc(lua_State *L)
{
    static const luaL_Reg f[] = {{"run", l_run}, {NULL, NULL}};
    luaL_newlib(L, f);
    return 1;
}

FR_MODULE("flow.proc", luaopen_proc)
