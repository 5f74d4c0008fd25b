/*
 * repl.c — line editing for the REPL (module "flow.readline"): libedit's callback interface
 * driven by a uv_poll on standard input, so other tasks keep running while the user types.
 * Policy (what a line means, printing, completion candidates) is Lua: lua/flowrun/cli/repl.lua.
 *
 *   rl.install(prompt)        show the prompt; input is collected from now on
 *   rl.wait()                 wait until stdin is readable (or Ctrl-C); "input" | "interrupt"
 *   rl.feed() -> done, line   process what was typed; done with the line (nil on EOF)
 *   rl.remove()               stop collecting input
 *   rl.set_completer(fn)      fn(word) -> list of completions of the word under the cursor
 *   rl.set_line_task(h|nil)   the task Ctrl-C cancels while a line runs
 *   rl.add_history(line [, path])    into the history, and appended to the file at path
 *   rl.load_history(path [, keep])   the file's entries into the history (the file cut to its
 *                                    last keep entries, 1000, once it holds twice as many)
 *
 * The terminal stays in blocking mode: uv_poll_init makes a descriptor non-blocking, and the
 * terminal's standard input and output are one open file, so stdio's writes of a large value
 * would fail half-way with EAGAIN. The poll only says when to read; reads follow readiness.
 *
 * History file: libedit's own format (read by read_history), each entry appended under an flock
 * when it is entered, so REPLs running at once add to the file instead of rewriting it with
 * their own history when they exit.
 *
 * Ctrl-R: libedit's incremental search (em-inc-search-prev) does not work in callback mode (the
 * line it hands back holds its search prompt), so the search is here: Ctrl-R binds to a
 * function that starts it; while it is on, keys are read and interpreted here, and libedit only
 * shows the state (its prompt becomes "(reverse-i-search)`query': ", its line the match),
 * redrawn through ed-redisplay bound to a private key sequence. Enter runs the match, Ctrl-G
 * gives the line back as it was, Ctrl-R finds an older match, Backspace shortens the query, any
 * other control key (an arrow, Ctrl-E ...) ends the search, leaving the match to edit, and does
 * what it does in libedit; Escape alone only ends it.
 *
 * Ownership: the uv_poll handle is static and closed by the scheduler's shutdown walk; lines
 * returned by libedit are freed here after being copied into Lua.
 */
#include "flowrun.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
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
static char *cur_prompt; /* the prompt of the line being read */

/* Standard input (and with it, on a terminal, standard output) back in blocking mode. */
static void make_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl != -1 && (fl & O_NONBLOCK))
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

static void line_cb(char *l)
{
    line_done = true;
    free(line);
    line = l;
    /* libedit prints the prompt again after a line: stop until the next install */
    rl_callback_handler_remove();
}

/* ---- the wait op ----------------------------------------------------------------------------- */
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

/* A Ctrl-D typed while the last line ran reached a terminal in canonical mode, which keeps it
 * as an end-of-file mark, not a character; once libedit makes the terminal raw, that mark reads
 * as a NUL byte that libedit takes for a key prefix and then waits for the next key, with the
 * loop blocked. So before that (rl.install): readable, canonical, nothing in FIONREAD is that
 * mark — read it (read answers 0) and end the input, as bash does with a Ctrl-D typed ahead. */
static bool eof_typed;

static void take_typed_eof(void)
{
    struct termios t;
    struct pollfd p = {.fd = 0, .events = POLLIN};
    int n = -1;
    if (tcgetattr(0, &t) != 0 || !(t.c_lflag & ICANON))
        return;
    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLIN | POLLHUP)))
        return;
    if (ioctl(0, FIONREAD, &n) != 0 || n != 0)
        return;
    char c;
    if (read(0, &c, 1) == 0)
        eof_typed = true;
}

static int l_wait(lua_State *L)
{
    if (!poll_inited) {
        int rc = uv_poll_init(fr_loop(), &poll_handle, 0);
        if (rc != 0)
            return luaL_error(L, "cannot watch standard input: %s", uv_strerror(rc));
        poll_inited = true;
    }
    make_blocking(0);
    make_blocking(1);
    input_op_t *op = fr_op_new(L, sizeof *op, &input_vt);
    if (interrupted) { /* Ctrl-C arrived between waits */
        interrupted = false;
        op->interrupted = true;
        op->base.state = FR_OP_DONE;
        return fr_op_wait(L, op);
    }
    if (eof_typed) { /* rl.feed answers the end of the input */
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

/* ---- completion ------------------------------------------------------------------------------ */
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

/* ---- reverse-i-search (see the header) ------------------------------------------------------ */
#define REDISPLAY_KEYS "\033[99~" /* bound to ed-redisplay; never sent by a terminal */

static struct {
    bool on;
    bool failed;
    char query[256];
    size_t qlen;
    int at;      /* history offset of the match shown (0 is the oldest), -1 for none */
    char *saved; /* the line as it was before the search */
} search;

/* Run libedit on keys pushed into its input (never on standard input, which would block). */
static void run_keys(const char *keys)
{
    for (const char *k = keys; *k; k++)
        rl_insert(1, (unsigned char)*k); /* rl_insert pushes the key into libedit's input */
    rl_callback_read_char();
}

static void redisplay(void)
{
    run_keys(REDISPLAY_KEYS);
}

/* The line libedit edits becomes text. */
static void set_line(const char *text)
{
    if (*text) {
        rl_replace_line(text, 0);
    } else {
        run_keys("\025"); /* em-kill-line: rl_replace_line refuses an empty line */
    }
}

static const char *history_at(int i)
{
    HIST_ENTRY *he = history_get(history_base + i);
    return he ? he->line : NULL;
}

/* The newest entry at or before offset `from` that holds the query, or -1. */
static int find(int from)
{
    for (int i = from; i >= 0; i--) {
        const char *l = history_at(i);
        if (l && strstr(l, search.query))
            return i;
    }
    return -1;
}

static void show_search(void)
{
    char prompt[sizeof search.query + 64];
    snprintf(prompt, sizeof prompt, "(%sreverse-i-search)`%s': ", search.failed ? "failed " : "",
             search.query);
    rl_set_prompt(prompt);
    const char *l = search.at >= 0 ? history_at(search.at) : NULL;
    char *text = strdup(l ? l : (search.saved ? search.saved : ""));
    if (text) {
        /* a line ending in a newline would be taken as entered */
        size_t n = strlen(text);
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
            text[--n] = '\0';
        set_line(text);
        free(text);
    }
    redisplay();
}

/* Ctrl-R, called by libedit: start a search (or, when one is on, look further back). */
static int search_start(int count, int key)
{
    (void)count;
    (void)key;
    if (search.on)
        return 0;
    search.on = true;
    search.failed = false;
    search.qlen = 0;
    search.query[0] = '\0';
    search.at = -1;
    free(search.saved);
    search.saved = strdup(rl_line_buffer ? rl_line_buffer : "");
    return 0; /* shown by rl.feed once libedit has returned */
}

/* End the search: keep the match on the line (keep) or give the line back as it was. */
static void search_end(bool keep, bool show)
{
    if (!search.on)
        return;
    search.on = false;
    rl_set_prompt(cur_prompt ? cur_prompt : "");
    if (show) {
        const char *l = keep && search.at >= 0 ? history_at(search.at) : NULL;
        if (!l)
            l = search.saved ? search.saved : "";
        char *text = strdup(l);
        if (text) {
            size_t n = strlen(text);
            while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
                text[--n] = '\0';
            set_line(text);
            free(text);
        }
        redisplay();
    }
    free(search.saved);
    search.saved = NULL;
}

/* Bytes available on standard input without waiting? */
static bool input_pending(void)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static bool read_byte(unsigned char *c)
{
    ssize_t n;
    do {
        n = read(0, c, 1);
    } while (n < 0 && errno == EINTR);
    return n == 1;
}

/* One key typed while searching, read here from standard input (one at a time: what follows
 * the key that ends the search is libedit's). */
static void search_key(void)
{
    unsigned char c;
    if (!read_byte(&c)) {
        search_end(true, true);
        return;
    }
    if (c == '\r' || c == '\n') { /* run the match */
        search_end(true, true);
        run_keys("\n");
        return;
    }
    if (c == 0x07) { /* Ctrl-G: the line as it was */
        search_end(false, true);
        return;
    }
    if (c == 0x12) { /* Ctrl-R: further back */
        int at = search.at < 0   ? find(history_length - 1)
                 : search.at > 0 ? find(search.at - 1)
                                 : -1;
        if (at >= 0)
            search.at = at;
        search.failed = at < 0;
    } else if (c == 0x7f || c == 0x08) { /* Backspace: a character less */
        while (search.qlen > 0 && (search.query[search.qlen - 1] & 0xC0) == 0x80)
            search.qlen--;
        if (search.qlen > 0)
            search.qlen--;
        search.query[search.qlen] = '\0';
        search.at = search.qlen ? find(history_length - 1) : -1;
        search.failed = search.qlen && search.at < 0;
    } else if (c < 0x20) {
        /* any other control key: edit the match, and the key is libedit's; Escape alone only
         * ends the search (given to libedit, it would wait for the key it prefixes) */
        search_end(true, true);
        if (c != 0x1b || input_pending()) {
            char k[2] = {(char)c, '\0'};
            run_keys(k);
        }
        return;
    } else {
        /* a character of the query: a UTF-8 sequence arrives whole */
        unsigned char ch[4] = {c, 0, 0, 0};
        size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        for (size_t i = 1; i < n; i++)
            if (!read_byte(&ch[i]) || (ch[i] & 0xC0) != 0x80)
                return;
        if (search.qlen + n < sizeof search.query) {
            memcpy(search.query + search.qlen, ch, n);
            search.qlen += n;
            search.query[search.qlen] = '\0';
            int at = find(search.at >= 0 ? search.at : history_length - 1);
            if (at >= 0)
                search.at = at;
            search.failed = at < 0;
        }
    }
    show_search();
}

/* ---- the Lua module -------------------------------------------------------------------------- */
static int l_install(lua_State *L)
{
    const char *prompt = luaL_checkstring(L, 1);
    char *copy = strdup(prompt);
    if (!copy)
        return luaL_error(L, "out of memory");
    free(cur_prompt);
    cur_prompt = copy;
    line_done = false;
    take_typed_eof(); /* before libedit makes the terminal raw */
    rl_resize_terminal();
    rl_callback_handler_install(prompt, line_cb);
    return 0;
}

static int l_remove(lua_State *L)
{
    (void)L;
    search_end(false, false);
    rl_replace_line("", 0); /* an abandoned line must not come back with the next one */
    rl_callback_handler_remove();
    return 0;
}

static int l_feed(lua_State *L)
{
    completer_L = L;
    if (eof_typed) {
        eof_typed = false;
        rl_callback_handler_remove();
        completer_L = NULL;
        lua_pushboolean(L, 1);
        lua_pushnil(L);
        return 2;
    }
    if (search.on) {
        search_key();
    } else {
        rl_callback_read_char();
        if (search.on) /* Ctrl-R was that key */
            show_search();
    }
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

/* The history file, open and locked (exclusively, waiting for other REPLs), or -1. */
static int lock_history(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

static int fail_errno(lua_State *L, const char *what, const char *path)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(errno));
    return 2;
}

/* An entry as libedit's history file holds it (what strunvis, called by read_history, decodes):
 * spaces, controls and bytes beyond ASCII as \ooo, a backslash doubled; one line. libedit's
 * append_history is not used: it writes the entry before the last one as well. */
static char *encode_entry(const char *entry, size_t *len)
{
    size_t n = strlen(entry);
    char *out = malloc(n * 4 + 2);
    if (!out)
        return NULL;
    char *p = out;
    for (const unsigned char *c = (const unsigned char *)entry; *c; c++) {
        if (*c == '\\') {
            *p++ = '\\';
            *p++ = '\\';
        } else if (*c <= ' ' || *c >= 0x7f) {
            p += sprintf(p, "\\%03o", *c);
        } else {
            *p++ = (char)*c;
        }
    }
    *p++ = '\n';
    *len = (size_t)(p - out);
    return out;
}

/* rl.add_history(line [, path]) -> true | nil, msg: into the history, and appended to the file
 * (one write, under its lock, so two REPLs' entries never interleave or overwrite each other). */
static int l_add_history(lua_State *L)
{
    const char *entry = luaL_checkstring(L, 1);
    const char *path = luaL_optstring(L, 2, NULL);
    add_history(entry);
    if (!path) {
        lua_pushboolean(L, 1);
        return 1;
    }
    size_t len;
    char *text = encode_entry(entry, &len);
    if (!text)
        return luaL_error(L, "out of memory");
    int fd = lock_history(path);
    if (fd < 0) {
        free(text);
        return fail_errno(L, "cannot open the history file", path);
    }
    static const char cookie[] = "_HiStOrY_V2_\n";
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && lseek(fd, 0, SEEK_END) >= 0;
    if (ok && st.st_size == 0)
        ok = write(fd, cookie, sizeof cookie - 1) == (ssize_t)(sizeof cookie - 1);
    if (ok)
        ok = write(fd, text, len) == (ssize_t)len;
    int saved = errno;
    free(text);
    close(fd);
    if (!ok) {
        errno = saved;
        return fail_errno(L, "cannot append to the history file", path);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Cut the history file (open as fd, locked) to its last `keep` entries once it holds twice as
 * many, in place: the first line (libedit's "_HiStOrY_V2_" marker) stays, one entry a line. */
static void trim_history(int fd, long keep)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > 64 * 1024 * 1024)
        return;
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n);
    if (!buf)
        return;
    if (pread(fd, buf, n, 0) != (ssize_t)n)
        goto out;
    long lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += buf[i] == '\n';
    if (lines - 1 <= 2 * keep)
        goto out;
    char *first_end = memchr(buf, '\n', n);
    if (!first_end)
        goto out;
    size_t head = (size_t)(first_end - buf) + 1;
    /* the start of the last keep entries: after the keep-th newline before the final one */
    size_t end = buf[n - 1] == '\n' ? n - 1 : n, start = head;
    long k = 0;
    for (size_t i = end; i > head; i--) {
        if (buf[i - 1] == '\n' && ++k == keep) {
            start = i;
            break;
        }
    }
    if (start <= head)
        goto out;
    memmove(buf + head, buf + start, n - start);
    size_t len = head + (n - start);
    if (pwrite(fd, buf, len, 0) == (ssize_t)len)
        (void)ftruncate(fd, (off_t)len);
out:
    free(buf);
}

/* rl.load_history(path [, keep]) -> true | nil, msg */
static int l_load_history(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer keep = luaL_optinteger(L, 2, 1000);
    luaL_argcheck(L, keep > 0 && keep <= INT_MAX, 2, "a positive number of entries");
    int fd = lock_history(path);
    if (fd < 0)
        return fail_errno(L, "cannot open the history file", path);
    trim_history(fd, (long)keep);
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > 0)
        read_history(path);
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
}

static void repl_shutdown(void)
{
    clear_matches();
    free(line);
    line = NULL;
    free(cur_prompt);
    cur_prompt = NULL;
    free(search.saved);
    search.saved = NULL;
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
                                 {NULL, NULL}};
    luaL_newlib(L, f);
    rl_readline_name = "flowrun";
    /* libedit's signal handlers (set while it reads a key) put the terminal back in canonical
     * mode on SIGINT and send the signal again to the whole process group; the key it was
     * reading then waits for a newline, blocking the loop. Ctrl-C is the scheduler's (see
     * interrupt_hook); a resized terminal is measured again at each prompt. */
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_initialize();
    rl_add_defun("flowrun-reverse-search", search_start, 0x12 /* Ctrl-R */);
    rl_parse_and_bind("bind " REDISPLAY_KEYS " ed-redisplay"); /* the escape itself, unquoted */
    rl_attempted_completion_function = complete;
    /* '.' and ':' are part of a completion word (aws.dms.desc), so they are not breaks */
    rl_completer_word_break_characters = " \t\n\"\\'`@$><=;|&{(,+-*/%^~#";
    fr_sched_set_interrupt_hook(interrupt_hook);
    fr_at_shutdown(repl_shutdown);
    return 1;
}

FR_MODULE("flow.readline", luaopen_readline)
