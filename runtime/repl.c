/*
 * repl.c — line editing for the REPL (module "flow.readline"): libedit's callback interface
 * driven by a uv_poll on standard input, so other tasks keep running while the user types.
 * Policy (what a line means, printing, completion candidates) is Lua: lua/flow/repl.lua.
 *
 *   rl.install(prompt)        show the prompt; input is collected from now on
 *   rl.wait()                 wait until stdin is readable (or Ctrl-C); "input" | "interrupt"
 *   rl.feed() -> done, line   process what was typed; done with the line (nil on EOF)
 *   rl.remove()               stop collecting input
 *   rl.set_completer(fn)      fn(word) -> list of completions of the word under the cursor
 *   rl.set_line_task(h|nil)   the task Ctrl-C cancels while a line runs
 *   rl.add_history(line), rl.load_history(path), rl.save_history(path)
 *
 * Ownership: the uv_poll handle is static and closed by the scheduler's shutdown walk; lines
 * returned by libedit are freed here after being copied into Lua.
 */
#include "flowrun.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

static uv_poll_t poll_handle;
static bool poll_inited;
static fr_op_t *input_op; /* the pending rl.wait */
static bool interrupted;
static bool line_done;
static char *line;
static fr_task_t *line_task;
static lua_State *completer_L; /* the task running rl.feed, while it runs */
static const char completer_key = 0;
static const char line_task_key = 0;

static void line_cb(char *l)
{
    line_done = true;
    free(line);
    line = l;
    /* libedit prints the prompt again after a line: stop until the next install */
    rl_callback_handler_remove();
}

/* ---- the wait op ------------------------------------------------------------------------------- */
typedef struct {
    fr_op_t base;
    bool interrupted;
} input_op_t;

static void poll_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    uv_poll_stop(h);
    if (input_op) {
        fr_op_t *op = input_op;
        input_op = NULL;
        fr_op_complete(op);
    }
}

static bool input_cancel(fr_op_t *op)
{
    (void)op;
    uv_poll_stop(&poll_handle);
    input_op = NULL;
    return true;
}

static int input_results(lua_State *L, fr_op_t *op)
{
    lua_pushstring(L, ((input_op_t *)op)->interrupted ? "interrupt" : "input");
    return 1;
}

static const fr_op_vt_t input_vt = {"stdin", input_results, input_cancel, NULL, true};

/* Ctrl-C: cancel the running line, or abandon the line being typed. */
static bool interrupt_hook(int sig)
{
    if (sig != SIGINT)
        return false;
    if (line_task) {
        fr_task_cancel(line_task);
        return true;
    }
    if (input_op) {
        input_op_t *op = (input_op_t *)input_op;
        op->interrupted = true;
        uv_poll_stop(&poll_handle);
        input_op = NULL;
        fr_op_complete(op);
        return true;
    }
    interrupted = true;
    return true;
}

static int l_wait(lua_State *L)
{
    if (!poll_inited) {
        int rc = uv_poll_init(fr_loop(), &poll_handle, 0);
        if (rc != 0)
            return luaL_error(L, "cannot watch standard input: %s", uv_strerror(rc));
        poll_inited = true;
    }
    input_op_t *op = fr_op_new(L, sizeof *op, &input_vt);
    if (interrupted) { /* Ctrl-C arrived between waits */
        interrupted = false;
        op->interrupted = true;
        op->base.state = FR_OP_DONE;
        return fr_op_wait(L, op);
    }
    int rc = uv_poll_start(&poll_handle, UV_READABLE, poll_cb);
    if (rc != 0) {
        fr_op_discard(op);
        return luaL_error(L, "cannot watch standard input: %s", uv_strerror(rc));
    }
    input_op = &op->base;
    return fr_op_wait(L, op);
}

/* ---- completion ---------------------------------------------------------------------------------- */
static char **matches;
static int nmatches, match_next;

static char *match_gen(const char *text, int state)
{
    (void)text;
    if (state == 0)
        match_next = 0;
    if (match_next < nmatches)
        return strdup(matches[match_next++]);
    return NULL;
}

static void clear_matches(void)
{
    for (int i = 0; i < nmatches; i++)
        free(matches[i]);
    free(matches);
    matches = NULL;
    nmatches = 0;
}

/* Ask the Lua completer for the candidates of `text`; libedit shows or inserts them. */
static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;
    rl_completion_append_character = '\0'; /* "string" may go on with ".format" */
    lua_State *L = completer_L;
    clear_matches();
    if (!L)
        return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &completer_key);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    int n = (int)luaL_len(L, -1);
    matches = calloc((size_t)n + 1, sizeof *matches);
    for (int i = 1; matches && i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *s = lua_tostring(L, -1);
        if (s)
            matches[nmatches++] = strdup(s);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (nmatches == 0)
        return NULL;
    return rl_completion_matches(text, match_gen);
}

/* ---- the Lua module -------------------------------------------------------------------------------- */
static int l_install(lua_State *L)
{
    const char *prompt = luaL_checkstring(L, 1);
    line_done = false;
    rl_callback_handler_install(prompt, line_cb);
    return 0;
}

static int l_remove(lua_State *L)
{
    (void)L;
    rl_replace_line("", 0); /* an abandoned line must not come back with the next one */
    rl_callback_handler_remove();
    return 0;
}

static int l_feed(lua_State *L)
{
    completer_L = L;
    rl_callback_read_char();
    completer_L = NULL;
    if (!line_done) {
        lua_pushboolean(L, 0);
        return 1;
    }
    line_done = false;
    lua_pushboolean(L, 1);
    if (line) {
        lua_pushstring(L, line);
        free(line);
        line = NULL;
    } else {
        lua_pushnil(L);
    }
    return 2;
}

static int l_set_completer(lua_State *L)
{
    lua_settop(L, 1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &completer_key);
    return 0;
}

static int l_set_line_task(lua_State *L)
{
    lua_settop(L, 1);
    line_task = lua_isnil(L, 1) ? NULL : luaL_checkudata(L, 1, "flowrun.task");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &line_task_key); /* keep the handle alive */
    return 0;
}

static int l_add_history(lua_State *L)
{
    add_history(luaL_checkstring(L, 1));
    return 0;
}

static int l_load_history(lua_State *L)
{
    read_history(luaL_checkstring(L, 1));
    return 0;
}

static int l_save_history(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    stifle_history((int)luaL_optinteger(L, 2, 1000));
    lua_pushboolean(L, write_history(path) == 0);
    return 1;
}

static void repl_shutdown(void)
{
    clear_matches();
    free(line);
    line = NULL;
}

static int luaopen_readline(lua_State *L)
{
    static const luaL_Reg f[] = {{"install", l_install},
                                 {"remove", l_remove},
                                 {"wait", l_wait},
                                 {"feed", l_feed},
                                 {"set_completer", l_set_completer},
                                 {"set_line_task", l_set_line_task},
                                 {"add_history", l_add_history},
                                 {"load_history", l_load_history},
                                 {"save_history", l_save_history},
                                 {NULL, NULL}};
    luaL_newlib(L, f);
    rl_readline_name = "flowrun";
    rl_attempted_completion_function = complete;
    /* '.' and ':' are part of a completion word (aws.dms.desc), so they are not breaks */
    rl_completer_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#";
    fr_sched_set_interrupt_hook(interrupt_hook);
    fr_at_shutdown(repl_shutdown);
    return 1;
}

FR_MODULE("flow.readline", luaopen_readline)
