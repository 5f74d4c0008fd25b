/*
 * flowrun.h — the one internal header: types and functions shared between the C units.
 *
 * The contract every waiting primitive follows (see STYLE.md, "Suspending and resuming"):
 *
 *   static int l_thing(lua_State *L) {
 *       check arguments;
 *       my_op_t *op = fr_op_new(L, sizeof *op, &my_vt);   // raises unless a task can wait here
 *       start the libuv/curl/libpq work; on failure: fr_op_discard(op) and raise/return error;
 *       return fr_op_wait(L, op);                          // yields; resumes with vt->results
 *   }
 *
 * Completion callbacks (libuv, curl, libpq) make no Lua API calls: they store the C result in
 * the op and call fr_op_complete(op). The scheduler resumes the task from the top of the C
 * stack; the continuation then calls vt->results in protected mode inside the task, and frees
 * the op with vt->free.
 *
 * Cancelling a task calls vt->cancel(op). If cancel returns true the work is stopped and no
 * callback will touch the op again: the scheduler frees it. If it returns false a callback is
 * still due (a uv_close, a PQcancel round trip): the op is detached from the task (op->task is
 * NULL) and the module's callback calls fr_op_complete(op) as usual, which frees a detached op.
 */
#ifndef FLOWRUN_H
#define FLOWRUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#define FR_VERSION "0.1.0"

/* ---- modules ------------------------------------------------------------------------------
 * Each C unit registers its Lua modules with FR_MODULE; main.c puts them in package.preload,
 * so adding a unit needs no edit elsewhere. */
typedef struct fr_module {
    const char *name;
    lua_CFunction open;
    struct fr_module *next;
} fr_module_t;

void fr_module_register(fr_module_t *m);
fr_module_t *fr_modules(void);

#define FR_MODULE(modname, fn)                                                                \
    static fr_module_t fr_module_##fn = {modname, fn, NULL};                                \
    __attribute__((constructor)) static void fr_module_init_##fn(void)                     \
    {                                                                                          \
        fr_module_register(&fr_module_##fn);                                                   \
    }

/* ---- the process (sys.c) -------------------------------------------------------------------- */
/* Where the Lua trees are ($FLOWRUN_ROOT, beside the binary, PREFIX/share/flowrun). */
const char *fr_root(void);
/* Where the shared C units (<unit>.so) are. */
const char *fr_moddir(void);

/* ---- the loop and the clock ---------------------------------------------------------------- */
uv_loop_t *fr_loop(void);
/* Monotonic seconds since start; follows virtual time when it is on. */
double fr_now(void);
/* Wall-clock seconds since the epoch; follows virtual time when it is on. */
double fr_time(void);
bool fr_virtual_time(void);
/* Run fn after lua_close, before the loop is closed (modules with global handles: curl multi). */
void fr_at_shutdown(void (*fn)(void));

/* ---- tasks and operations ------------------------------------------------------------------ */
typedef struct fr_task fr_task_t;
typedef struct fr_op fr_op_t;

typedef struct fr_op_vt {
    const char *name; /* "sleep", "http", "pg.query": shown in debug output */
    /* In the task, after completion: push results and return their count. Runs in protected
     * mode, so it may raise (an error object, out of memory); the op is freed either way.
     * NULL pushes nothing. */
    int (*results)(lua_State *L, fr_op_t *op);
    /* Stop the work. true: stopped, no callback will come; false: a callback is still due and
     * will call fr_op_complete on the (then detached) op. NULL means "nothing to stop". */
    bool (*cancel)(fr_op_t *op);
    /* Release what the op holds (not the op's own memory). May be NULL. */
    void (*free)(fr_op_t *op);
    /* true for network/database work: virtual time never jumps while such an op is pending. */
    bool io;
} fr_op_vt_t;

enum { FR_OP_PENDING, FR_OP_DONE, FR_OP_CANCELLED };

struct fr_op {
    const fr_op_vt_t *vt;
    fr_task_t *task; /* NULL once detached by a cancel that is still finishing */
    int state;
    /* timer heap slot (sched.c); -1 when not in the heap */
    int heap_index;
    double deadline;
};

/* Allocate an op of `size` bytes (>= sizeof(fr_op_t), zeroed) for the running task. Raises a
 * usage error when no task can wait here (main thread, a plain coroutine, a C boundary such as
 * a table.sort comparator or __gc) and the flow.cancelled error when the task is cancelled. */
void *fr_op_new(lua_State *L, size_t size, const fr_op_vt_t *vt);
/* Yield the running task until the op completes; returns what vt->results pushed. */
int fr_op_wait(lua_State *L, void *op);
/* From a completion callback: mark done and queue the task (or free a detached op). */
void fr_op_complete(void *op);
/* Free an op that was never waited on (starting the work failed). */
void fr_op_discard(void *op);

/* Arm the op's timer: it completes when fr_now() reaches `deadline` (used by sleep). A
 * deadline FR_FOREVER or more seconds away (or not a number) arms nothing: the op waits until
 * it completes otherwise or is cancelled, and keeps the process waiting meanwhile. */
void fr_timer_start(fr_op_t *op, double deadline);
void fr_timer_stop(fr_op_t *op);

/* ---- durations ------------------------------------------------------------------------------
 * The one place a duration in seconds is checked and converted; every C primitive that takes
 * seconds uses it (Lua: flow.core.duration). NaN, a negative number or a non-number raises a
 * usage error naming `what` ("flow.sleep", "http.request timeout"). FR_FOREVER seconds or more
 * (about 127 million years, where the loop's millisecond clock ends) and +inf mean "forever":
 * HUGE_VAL is returned, and fr_timer_start arms nothing for it. */
#define FR_FOREVER 4.0e15
double fr_duration_arg(lua_State *L, int idx, const char *what);

/* Request cancellation of a task (false when it already finished). */
bool fr_task_cancel(fr_task_t *t);
/* The scheduler (sched.c), for main.c and repl.c. */
void fr_sched_init(lua_State *L);
fr_task_t *fr_task_spawn(lua_State *L, int nargs);
bool fr_sched_run(fr_task_t *main, bool all);
void fr_sched_shutdown(void);
void fr_sched_cancel_all(void);
/* The signal that stopped everything (SIGINT, SIGTERM, SIGHUP), or 0. */
int fr_sched_signal(void);
bool fr_task_ok(fr_task_t *t);
lua_State *fr_task_thread(fr_task_t *t);
/* A hook that may take SIGINT/SIGTERM/SIGHUP first (the REPL: Ctrl-C cancels the running
 * line); true when it handled the signal. Called from the loop or from the watchdog's hook in
 * the running task (never from the signal handler), so it may cancel tasks and complete ops. */
void fr_sched_set_interrupt_hook(bool (*hook)(int sig));

/* The task running on L, or NULL (main thread, a non-task coroutine). */
fr_task_t *fr_task_current(lua_State *L);
int fr_task_id(const fr_task_t *t);

/* ---- error objects (one place builds them: error.c) ---------------------------------------
 * A table with metatable "flowrun.error": code, message, retryable (+ fields callers add).
 * __tostring gives "code: message". */
void fr_error_push(lua_State *L, const char *code, const char *message, bool retryable);
int fr_error_raise(lua_State *L, const char *code, bool retryable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Is the value at idx a flowrun.error whose code equals `code` (NULL: any code)? */
bool fr_error_is(lua_State *L, int idx, const char *code);

/* ---- logging (log.c) ----------------------------------------------------------------------
 * Debug categories come from --debug / FLOWRUN_DEBUG ("aws", "http", "pg", "sched", "all"); the
 * list lives in log.c only. */
bool fr_debug_enabled(const char *category);
/* Read FLOWRUN_DEBUG now (main.c, at start): an unknown category is a warning on stderr. */
void fr_debug_init(void);
/* Set the categories ("aws,http"; "" or NULL: none). false when one is unknown: its name is
 * copied into bad and nothing changes. */
bool fr_debug_set(const char *categories, char *bad, size_t badlen);
/* "aws, http, pg, sched, all": for messages */
const char *fr_debug_known(void);
/* For Lua bindings: set from the string at idx; pushes true, or nil and an error object. */
int fr_debug_set_lua(lua_State *L, int idx);
void fr_log(const char *category, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- JSON (json.c, pure) ------------------------------------------------------------------- */
/* Encode the value at idx; pushes the string, or raises with a message naming the path. */
void fr_json_encode(lua_State *L, int idx, bool pretty);
/* Decode; pushes the value, or returns false and pushes an error message. */
bool fr_json_decode(lua_State *L, const char *s, size_t len);
/* Push json.null, the sentinel for JSON null (pg.null is the same value). */
void fr_json_push_null(lua_State *L);
bool fr_json_isnull(lua_State *L, int idx);
/* base64, standard alphabet, padded (json.c). encode writes 4 * ceil(n / 3) bytes; decode
 * writes at most n / 4 * 3 + 3, skips whitespace, and on malformed input returns false with
 * what and where in why. */
size_t fr_base64_encode(const void *in, size_t n, char *out);
/* The value of one hexadecimal digit (either case), or -1 (percent-decoding, bytea). */
static inline int fr_hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}
bool fr_base64_decode(const char *in, size_t n, void *out, size_t *outlen, char *why,
                      size_t whylen);

#endif
