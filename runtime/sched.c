/*
 * sched.c — tasks on the libuv loop: coroutines, yield/resume, operations, timers, virtual
 * time, cancellation, signals. Exposes the Lua module "flow.core".
 *
 * A task is a full userdata ("flowrun.task") whose first user value is its coroutine. While a
 * task lives it is anchored in the registry (luaL_ref), so neither it nor its coroutine can be
 * collected; once finished only handles keep it. The coroutine's extra space points back to
 * the task, which is how a waiting primitive finds "the task running here" and refuses to wait
 * in a plain coroutine.
 *
 * Completion callbacks never call Lua: fr_op_complete queues the task; fr_sched_run resumes
 * queued tasks from the top of the C stack, between turns of uv_run.
 *
 * Timers are one binary heap of ops driven by a single uv_timer, so a sleeping task costs a
 * heap slot and a small op, not a libuv handle. Virtual time: when nothing is runnable and no
 * I/O op is pending, the clock jumps to the next deadline.
 *
 * Signals (SIGINT, SIGTERM, SIGHUP) have a handler of our own: the first is recorded and wakes
 * the loop (uv_async_send), which cancels every task (or lets the REPL's hook take it); a
 * second one, while the first is pending or once it was taken, ends the process at once with
 * 128+signal, from the handler itself, so it works even while Lua code spins.
 *
 * Code that never waits (`while true do end`) is reached by a watchdog: a POSIX timer signals
 * the main thread every WATCH_MS while tasks run (it disarms itself after two idle ticks, so an
 * idle process is not woken and a busy one makes no system call for it); when the same resume
 * of a task is still running at two ticks in a row, the handler sets a count hook on that task
 * (lua_sethook is async-signal-safe by design). The hook, running in the task, delivers a
 * pending signal, raises flow.cancelled if the task is cancelled and not shielded, and else
 * yields it when a timer is due, so the loop fires timers (flow.timeout, --timeout) and the
 * task is resumed later (with the cancellation error, if that is what the timer decided). The
 * hook is never on the normal path: a task that waits or finishes within WATCH_MS never sees it.
 * Limits: the hook is set on the task's own coroutine, so a plain coroutine the task resumed
 * is reached only when it yields back; a C function that does not return (a blocking read) is
 * not interrupted, and only a second signal ends the process then.
 *
 * Ownership: fr_op_t memory is malloc'd by fr_op_new and freed by the scheduler (free_op),
 * or by fr_op_complete for an op a cancel detached.
 */
#include "flowrun.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef sigev_notify_thread_id /* glibc before 2.35 */
#define sigev_notify_thread_id _sigev_un._tid
#endif

/* A task that runs this long without yielding (two watchdog ticks: WATCH_MS to 2*WATCH_MS)
 * is reached by the hook. */
#define WATCH_MS 100

#define TASK_MT "flowrun.task"

enum { T_NEW, T_READY, T_RUNNING, T_WAITING, T_OK, T_ERROR };
static const char *const state_names[] = {"pending", "ready",  "running",
                                          "waiting", "ok",     "error"};

typedef struct waiter {
    fr_op_t *op;
    fr_task_t *target;
    struct waiter *prev, *next;
} waiter_t;

struct fr_task {
    lua_State *co;
    int ref; /* registry anchor while alive, LUA_NOREF after */
    int id;
    int state;
    int nargs;
    int nres;
    bool cancelled; /* cancellation requested */
    bool observed;  /* its outcome was read by a waiter */
    bool is_main;
    bool preempted; /* it yielded from the watchdog's hook, not from a wait */
    bool closing;   /* its to-be-closed variables are being closed after it failed */
    int shield;
    fr_op_t *op; /* the op it waits on */
    fr_task_t *next_ready;
    fr_task_t *prev_live, *next_live;
    waiter_t *waiters;
};

typedef struct {
    fr_task_t *head, *tail;
} queue_t;

/* ---- global scheduler state ------------------------------------------------------------- */
static struct {
    uv_loop_t loop;
    lua_State *L; /* main thread */
    queue_t ready; /* new tasks, sleep(0), bare yields */
    queue_t woken; /* tasks whose operation completed: they run first */
    fr_task_t *live; /* every task not yet finished */
    int live_count;
    int next_id;
    int ops;        /* ops allocated and not freed */
    int io_pending; /* pending ops with vt->io */
    fr_op_t **heap;
    int heap_len, heap_cap;
    int forever; /* ops whose timer would fire "forever" from now: in no heap, they wait */
    uv_timer_t timer;
    uv_async_t wake; /* the signal handler's way into the loop */
    uint64_t t0;     /* uv_hrtime at start */
    double wall0;    /* wall clock at start */
    double voffset;  /* seconds virtual time has jumped */
    bool virtual_time;
    volatile sig_atomic_t signal; /* the signal taken as "stop everything" (0: none) */
    bool (*interrupt_hook)(int sig);
    void (*shutdown_fns[16])(void);
    int nshutdown;
} S;

/* What the signal handlers read and write; the handlers run on the main thread only (a signal
 * that lands on a worker thread is sent on to it), so they interrupt the code below but never
 * run beside it. */
static struct {
    volatile sig_atomic_t pending; /* received, not yet delivered */
    volatile sig_atomic_t closed;  /* the loop is gone: nothing to wake */
    pid_t main_tid;
    volatile sig_atomic_t watch_ok; /* the watchdog timer exists */
    volatile sig_atomic_t armed;    /* and ticks */
    volatile sig_atomic_t in_run;   /* run_ready is running tasks */
    int idle_ticks;                 /* ticks in a row outside run_ready */
    timer_t watch;
    lua_State *volatile running; /* the coroutine of the task being resumed, or NULL */
    volatile unsigned epoch;     /* bumped at each resume (and after the hook raised) */
    volatile unsigned seen;      /* the epoch at the last tick */
    volatile unsigned stale;     /* an epoch seen at two ticks in a row */
} W;

uv_loop_t *fr_loop(void)
{
    return &S.loop;
}

double fr_now(void)
{
    return (double)(uv_hrtime() - S.t0) / 1e9 + S.voffset;
}

double fr_time(void)
{
    if (S.virtual_time)
        return S.wall0 + fr_now();
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

bool fr_virtual_time(void)
{
    return S.virtual_time;
}

void fr_at_shutdown(void (*fn)(void))
{
    if (S.nshutdown < (int)(sizeof S.shutdown_fns / sizeof S.shutdown_fns[0]))
        S.shutdown_fns[S.nshutdown++] = fn;
}

void fr_sched_set_interrupt_hook(bool (*hook)(int sig))
{
    S.interrupt_hook = hook;
}

int fr_sched_signal(void)
{
    return S.signal;
}

/* ---- the timer heap ------------------------------------------------------------------------ */
static void heap_swap(int i, int j)
{
    fr_op_t *t = S.heap[i];
    S.heap[i] = S.heap[j];
    S.heap[j] = t;
    S.heap[i]->heap_index = i;
    S.heap[j]->heap_index = j;
}

static void heap_up(int i)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (S.heap[p]->deadline <= S.heap[i]->deadline)
            break;
        heap_swap(i, p);
        i = p;
    }
}

static void heap_down(int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < S.heap_len && S.heap[l]->deadline < S.heap[m]->deadline)
            m = l;
        if (r < S.heap_len && S.heap[r]->deadline < S.heap[m]->deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
}

static void timer_cb(uv_timer_t *h);

static void rearm_timer(void)
{
    if (S.heap_len == 0) {
        uv_timer_stop(&S.timer);
        return;
    }
    double delay = S.heap[0]->deadline - fr_now(); /* < FR_FOREVER: fits in milliseconds */
    uint64_t ms = delay <= 0 ? 0 : (uint64_t)ceil(delay * 1000.0);
    uv_timer_start(&S.timer, timer_cb, ms, 0);
}

/* heap_index of an op whose deadline is forever away: it is counted, not in the heap */
#define FOREVER_SLOT (-2)

void fr_timer_start(fr_op_t *op, double deadline)
{
    if (!(deadline - fr_now() < FR_FOREVER)) { /* also NaN: never a spin */
        op->deadline = HUGE_VAL;
        op->heap_index = FOREVER_SLOT;
        S.forever++;
        return;
    }
    if (S.heap_len == S.heap_cap) {
        int cap = S.heap_cap ? S.heap_cap * 2 : 256;
        fr_op_t **h = realloc(S.heap, (size_t)cap * sizeof *h);
        if (!h) {
            fprintf(stderr, "flowrun: out of memory (timer heap)\n");
            abort();
        }
        S.heap = h;
        S.heap_cap = cap;
    }
    op->deadline = deadline;
    op->heap_index = S.heap_len;
    S.heap[S.heap_len++] = op;
    heap_up(op->heap_index);
    if (op->heap_index == 0)
        rearm_timer();
}

void fr_timer_stop(fr_op_t *op)
{
    int i = op->heap_index;
    if (i == FOREVER_SLOT) {
        op->heap_index = -1;
        S.forever--;
        return;
    }
    if (i < 0)
        return;
    op->heap_index = -1;
    S.heap_len--;
    if (i != S.heap_len) {
        S.heap[i] = S.heap[S.heap_len];
        S.heap[i]->heap_index = i;
        heap_down(i);
        heap_up(S.heap[i]->heap_index);
    }
    if (i == 0)
        rearm_timer();
}

/* Complete every op whose deadline has come. */
static void fire_timers(void)
{
    double now = fr_now();
    while (S.heap_len > 0 && S.heap[0]->deadline <= now + 1e-9) {
        fr_op_t *op = S.heap[0];
        fr_timer_stop(op);
        fr_op_complete(op);
    }
    rearm_timer();
}

static void timer_cb(uv_timer_t *h)
{
    (void)h;
    fire_timers();
}

/* ---- ready queue and task life --------------------------------------------------------------- */
static void push(queue_t *q, fr_task_t *t)
{
    t->next_ready = NULL;
    if (q->tail)
        q->tail->next_ready = t;
    else
        q->head = t;
    q->tail = t;
}

static fr_task_t *pop(queue_t *q)
{
    fr_task_t *t = q->head;
    if (t) {
        q->head = t->next_ready;
        if (!q->head)
            q->tail = NULL;
        t->next_ready = NULL;
    }
    return t;
}

static void enqueue(fr_task_t *t)
{
    push(&S.ready, t);
}

/* A task woken by a completed operation goes ahead of tasks that merely have a turn, so a
 * burst of new tasks cannot make timers late. */
static void enqueue_woken(fr_task_t *t)
{
    push(&S.woken, t);
}

static fr_task_t *dequeue(void)
{
    fr_task_t *t = pop(&S.woken);
    return t ? t : pop(&S.ready);
}

static bool any_ready(void)
{
    return S.woken.head || S.ready.head;
}

static void live_unlink(fr_task_t *t)
{
    if (t->prev_live)
        t->prev_live->next_live = t->next_live;
    else
        S.live = t->next_live;
    if (t->next_live)
        t->next_live->prev_live = t->prev_live;
    t->prev_live = t->next_live = NULL;
    S.live_count--;
}

static void free_op(fr_op_t *op)
{
    if (op->heap_index != -1)
        fr_timer_stop(op);
    if (op->vt->io)
        S.io_pending--;
    if (op->vt->free)
        op->vt->free(op);
    S.ops--;
    free(op);
}

void *fr_op_new(lua_State *L, size_t size, const fr_op_vt_t *vt)
{
    fr_task_t *t = fr_task_current(L);
    if (!t)
        luaL_error(L, "cannot wait here: %s can only be called inside a flowrun task (not "
                      "from a plain coroutine)", vt->name);
    if (t->closing)
        luaL_error(L,
                   "cannot wait here: %s was called by a __close handler while its task was %s "
                   "(cleanup that waits belongs in flow.shield)",
                   vt->name, t->cancelled ? "being cancelled" : "failing");
    if (!lua_isyieldable(L))
        luaL_error(L, "cannot wait here: %s was called across a C boundary (a table.sort "
                      "comparator, a __gc or other metamethod called from C)", vt->name);
    if (t->cancelled && t->shield == 0) {
        fr_error_push(L, "flow.cancelled", "task cancelled", false);
        lua_error(L);
    }
    fr_op_t *op = calloc(1, size < sizeof(fr_op_t) ? sizeof(fr_op_t) : size);
    if (!op)
        luaL_error(L, "out of memory");
    op->vt = vt;
    op->task = t;
    op->state = FR_OP_PENDING;
    op->heap_index = -1;
    S.ops++;
    if (vt->io)
        S.io_pending++;
    return op;
}

void fr_op_discard(void *p)
{
    free_op(p);
}

void fr_op_complete(void *p)
{
    fr_op_t *op = p;
    if (!op->task) { /* detached by a cancel that needed this callback */
        free_op(op);
        return;
    }
    if (op->state != FR_OP_PENDING)
        return;
    op->state = FR_OP_DONE;
    fr_task_t *t = op->task;
    if (t->state == T_WAITING && t->op == op) {
        t->state = T_READY;
        enqueue_woken(t);
    }
}

static int raise_cancelled(lua_State *L)
{
    fr_error_push(L, "flow.cancelled", "task cancelled", false);
    return lua_error(L);
}

static int op_results(lua_State *L)
{
    fr_op_t *op = lua_touserdata(L, lua_upvalueindex(1));
    return op->vt->results(L, op);
}

static int op_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    fr_task_t *t = fr_task_current(L);
    fr_op_t *op = t->op;
    t->op = NULL;
    if (!op) /* detached by a cancel still finishing in the background */
        return raise_cancelled(L);
    if (op->state == FR_OP_CANCELLED) {
        free_op(op);
        return raise_cancelled(L);
    }
    if (!op->vt->results) {
        free_op(op);
        return 0;
    }
    int base = lua_gettop(L);
    lua_pushlightuserdata(L, op);
    lua_pushcclosure(L, op_results, 1);
    int rc = lua_pcall(L, 0, LUA_MULTRET, 0);
    free_op(op);
    if (rc != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - base;
}

int fr_op_wait(lua_State *L, void *p)
{
    fr_op_t *op = p;
    fr_task_t *t = op->task;
    t->op = op;
    t->state = T_WAITING;
    if (op->state == FR_OP_DONE) { /* completed while starting (sleep(0)): a turn */
        t->state = T_READY;
        enqueue(t);
    }
    return lua_yieldk(L, 0, 0, op_k);
}

fr_task_t *fr_task_current(lua_State *L)
{
    return *(fr_task_t **)lua_getextraspace(L);
}

int fr_task_id(const fr_task_t *t)
{
    return t->id;
}

/* Stop what a waiting task waits on and queue it to receive the cancellation error. */
static void interrupt(fr_task_t *t)
{
    fr_op_t *op = t->op;
    if (op && op->state == FR_OP_PENDING) {
        if (op->heap_index != -1)
            fr_timer_stop(op);
        bool stopped = op->vt->cancel ? op->vt->cancel(op) : true;
        if (stopped) {
            op->state = FR_OP_CANCELLED;
        } else {
            op->task = NULL; /* the module's callback frees it */
            t->op = NULL;
        }
    } else if (op) {
        op->state = FR_OP_CANCELLED; /* done but not yet delivered: deliver the cancel */
    }
    if (t->state == T_WAITING) {
        t->state = T_READY;
        enqueue(t);
    }
}

/* Request cancellation. Returns false when the task had already finished. */
bool fr_task_cancel(fr_task_t *t)
{
    if (t->state == T_OK || t->state == T_ERROR)
        return false;
    t->cancelled = true;
    if (t->shield == 0 && (t->state == T_WAITING || t->state == T_READY))
        interrupt(t);
    return true;
}

void fr_sched_cancel_all(void)
{
    for (fr_task_t *t = S.live; t; t = t->next_live)
        fr_task_cancel(t);
}

/* ---- signals and the watchdog ---------------------------------------------------------------- */
static const char *signal_name(int sig)
{
    return sig == SIGINT    ? "SIGINT"
           : sig == SIGTERM ? "SIGTERM"
           : sig == SIGHUP  ? "SIGHUP"
                            : "signal";
}

/* The first signal, in the loop or in a task's hook: the REPL's hook may take it (Ctrl-C
 * cancels the running line); otherwise it is the signal, and every task is cancelled. */
static void deliver_signal(void)
{
    int sig = W.pending;
    if (!sig)
        return;
    if (S.interrupt_hook && S.interrupt_hook(sig)) {
        W.pending = 0; /* handled: the next one is a first one again */
        return;
    }
    S.signal = sig; /* before pending is cleared: a signal in between is a second one */
    W.pending = 0;
    fr_sched_cancel_all();
}

static bool timer_due(void)
{
    return S.heap_len > 0 && S.heap[0]->deadline <= fr_now();
}

/* The count hook the watchdog sets on a task that has not yielded for a while (and run_task on
 * a preempted task that was cancelled meanwhile). It turns itself off first. */
static void watch_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    fr_task_t *t = fr_task_current(L);
    if (!t || t->co != L || t->state != T_RUNNING || W.stale != W.epoch)
        return; /* inherited by a new coroutine, or set for a resume that is over */
    if (W.pending)
        deliver_signal();
    if (t->cancelled && t->shield == 0) {
        /* raised again only if the task goes on without yielding for another while (a pcall
         * that swallows it): not in the cleanup code that follows a caught cancellation */
        W.epoch++;
        fr_error_push(L, "flow.cancelled", "task cancelled", false);
        lua_error(L);
    }
    if (timer_due() && lua_isyieldable(L)) {
        t->preempted = true;
        lua_yield(L, 0); /* run_task takes it for a bare yield: the task gets another turn */
    }
}

/* Both handlers run on the main thread only (see forward_signal) and may interrupt any code of
 * it; they touch only W, S.signal, uv_async_send and lua_sethook, all async-signal-safe. */
static bool forward_signal(int sig)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (tid == W.main_tid)
        return false;
    /* a libuv or libcurl worker thread got a process-directed signal: the main thread's
     * handler decides, with the main thread's state */
    syscall(SYS_tgkill, getpid(), W.main_tid, sig);
    return true;
}

static void on_signal(int sig)
{
    int saved = errno;
    if (forward_signal(sig)) {
        errno = saved;
        return;
    }
    if (S.signal || W.pending) { /* the second signal: exit at once */
        char msg[64];
        const char *name = signal_name(sig);
        size_t n = 0;
        for (const char *p = "\nflowrun: second "; *p;)
            msg[n++] = *p++;
        for (const char *p = name; *p;)
            msg[n++] = *p++;
        for (const char *p = ", exiting now\n"; *p;)
            msg[n++] = *p++;
        ssize_t w = write(2, msg, n);
        (void)w;
        _exit(128 + sig);
    }
    W.pending = sig;
    if (!W.closed)
        uv_async_send(&S.wake);
    errno = saved;
}

static void set_watch(bool on)
{
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (on) {
        its.it_value.tv_nsec = WATCH_MS * 1000000L;
        its.it_interval = its.it_value;
    }
    timer_settime(W.watch, 0, &its, NULL); /* async-signal-safe */
    W.armed = on;
}

/* The watchdog's tick: a task whose resume was already running at the previous tick has run
 * WATCH_MS or more without yielding; the hook takes it from here. Two ticks in a row with no
 * task running disarm the timer (run_ready arms it again), so an idle process sleeps. */
static void on_tick(int sig)
{
    (void)sig;
    if (!W.in_run) {
        if (++W.idle_ticks >= 2 && W.watch_ok)
            set_watch(false);
        return;
    }
    W.idle_ticks = 0;
    lua_State *co = W.running;
    if (!co)
        return;
    unsigned e = W.epoch;
    if (e == W.seen) {
        W.stale = e;
        lua_sethook(co, watch_hook, LUA_MASKCOUNT, 1);
    }
    W.seen = e;
}

/* Around run_ready. No system call while the timer ticks already: in_run is set before armed
 * is read, and the tick handler disarms only when in_run is not set, so the timer cannot be
 * disarmed behind run_ready's back. */
static void watch(bool on)
{
    W.in_run = on;
    if (on && !W.armed && W.watch_ok)
        set_watch(true);
}

static void wake_cb(uv_async_t *h)
{
    (void)h;
    deliver_signal();
}

static void install_signals(void)
{
    W.main_tid = (pid_t)syscall(SYS_gettid);
    uv_async_init(&S.loop, &S.wake, wake_cb);
    uv_unref((uv_handle_t *)&S.wake);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    int tick = SIGRTMIN;
    sigemptyset(&sa.sa_mask); /* the handlers do not interrupt each other */
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGHUP);
    sigaddset(&sa.sa_mask, tick);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    struct sigaction old;
    /* started under nohup: the terminal closing is not our business */
    if (sigaction(SIGHUP, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
        sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_tick;
    sigaction(tick, &sa, NULL);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID; /* the main thread, where the Lua state runs */
    sev.sigev_signo = tick;
    sev.sigev_notify_thread_id = W.main_tid;
    W.watch_ok = timer_create(CLOCK_MONOTONIC, &sev, &W.watch) == 0;
}

/* ---- finishing a task ------------------------------------------------------------------------ */
static void join_fire(fr_op_t *op, fr_task_t *target);

static void wake_waiters(fr_task_t *t)
{
    /* each join unlinks all of its waiters when it fires, so the list shrinks */
    while (t->waiters)
        join_fire(t->waiters->op, t);
}

static void finish(fr_task_t *t, int state)
{
    lua_State *L = S.L;
    t->state = state;
    live_unlink(t);
    wake_waiters(t);
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
}

static int to_text(lua_State *L)
{
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* A __close method raised while the task's variables were closed after it failed or was
 * cancelled (typically: it tried to wait). The error at the top of L is reported, not dropped. */
static void report_close_failure(lua_State *L, fr_task_t *t)
{
    lua_pushcfunction(L, to_text);
    lua_pushvalue(L, -2);
    const char *msg = lua_pcall(L, 1, 1, 0) == LUA_OK ? lua_tostring(L, -1) : NULL;
    fprintf(stderr,
            "flowrun: warning: task %d: a __close handler failed while the task was %s: %s\n",
            t->id, t->cancelled ? "being cancelled" : "failing",
            msg ? msg : "(an error value that cannot be shown)");
    lua_pop(L, 1);
}

/* traceback_of(err, co) -> "message\nstack traceback: ..." of the failed coroutine. */
static int traceback_of(lua_State *L)
{
    lua_State *co = lua_tothread(L, 2);
    const char *msg = luaL_tolstring(L, 1, NULL);
    luaL_traceback(L, co, msg, 0);
    return 1;
}

/* Resume one task; handles its yield, return or error. */
static void run_task(fr_task_t *t)
{
    lua_State *co = t->co;
    int nres = 0, nargs = 0;
    if (t->state == T_NEW) {
        if (t->cancelled) { /* cancelled before it ever ran */
            lua_settop(co, 0);
            fr_error_push(co, "flow.cancelled", "task cancelled", false);
            t->nres = 0;
            finish(t, T_ERROR);
            return;
        }
        nargs = t->nargs;
    }
    t->state = T_RUNNING;
    W.epoch++;
    if (t->preempted) {
        /* it was spinning when the hook yielded it: still stale, and a cancellation decided
         * meanwhile (a timeout) is raised at once */
        t->preempted = false;
        W.stale = W.epoch;
        if (t->cancelled && t->shield == 0)
            lua_sethook(co, watch_hook, LUA_MASKCOUNT, 1);
    }
    W.running = co;
    int st = lua_resume(co, S.L, nargs, &nres);
    W.running = NULL;
    if (st == LUA_YIELD) {
        if (t->state == T_RUNNING) {
            /* a bare coroutine.yield() in a task: give others a turn */
            lua_pop(co, nres);
            t->state = T_READY;
            enqueue(t);
        }
        return;
    }
    if (st == LUA_OK) {
        if (t->cancelled) {
            lua_settop(co, 0);
            fr_error_push(co, "flow.cancelled", "task cancelled", false);
            finish(t, T_ERROR);
            return;
        }
        t->nres = nres;
        finish(t, T_OK);
        return;
    }
    /* error: keep a traceback for the report, then close pending to-be-closed variables */
    if (lua_gethook(co))
        lua_sethook(co, NULL, 0, 0); /* the watchdog's hook has no business in __close */
    lua_State *L = S.L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref); /* the task */
    lua_pushcfunction(L, traceback_of);
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1); /* the error */
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushliteral(L, "(error while building the traceback)");
    }
    lua_setiuservalue(L, -2, 2);
    lua_pop(L, 1);
    lua_pushvalue(co, -1);
    lua_xmove(co, L, 1); /* keep the error while the thread resets */
    t->closing = true;
    int rs = lua_resetthread(co);
    t->closing = false;
    if (rs != LUA_OK && lua_gettop(co) > 0) {
        /* on top: the original error, or the error of a __close method that failed; the task
         * keeps the error that ended it and the other one is reported, not dropped */
        lua_xmove(co, L, 1);
        if (!lua_rawequal(L, -1, -2))
            report_close_failure(L, t);
        lua_pop(L, 1);
    }
    lua_settop(co, 0);
    lua_xmove(L, co, 1);
    if (t->cancelled && !fr_error_is(co, -1, "flow.cancelled")) {
        lua_settop(co, 0);
        fr_error_push(co, "flow.cancelled", "task cancelled", false);
    }
    finish(t, T_ERROR);
}

/* ---- joins: waiting for other tasks ---------------------------------------------------------- */
typedef struct {
    fr_op_t base;
    int n;
    int fired;     /* 1-based index of the task that finished (or failed); 0: none yet */
    int remaining; /* all mode: tasks still running; any mode: 0 */
    bool all;      /* wait for every task (or the first failure) instead of the first */
    waiter_t w[];
} join_op_t;

static void unlink_one(waiter_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        w->target->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->target = NULL;
}

static void join_unlink(join_op_t *j)
{
    for (int i = 0; i < j->n; i++)
        if (j->w[i].target)
            unlink_one(&j->w[i]);
}

static void join_fire(fr_op_t *op, fr_task_t *target)
{
    join_op_t *j = (join_op_t *)op;
    if (j->all) {
        /* the waiter of this target is the head of its list (wake_waiters pops heads) */
        waiter_t *w = target->waiters;
        int index = (int)(w - j->w) + 1;
        unlink_one(w);
        if (target->state == T_OK && --j->remaining > 0)
            return;
        if (target->state != T_OK)
            j->fired = index;
    } else {
        for (int i = 0; i < j->n; i++)
            if (j->w[i].target == target && j->fired == 0)
                j->fired = i + 1;
    }
    join_unlink(j);
    if (op->heap_index != -1)
        fr_timer_stop(op);
    fr_op_complete(op);
}

static bool join_cancel(fr_op_t *op)
{
    join_unlink((join_op_t *)op);
    return true;
}

static void join_free(fr_op_t *op)
{
    join_unlink((join_op_t *)op);
}

static int join_results(lua_State *L, fr_op_t *op)
{
    join_op_t *j = (join_op_t *)op;
    if (j->fired == 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, j->fired);
    return 1;
}

static const fr_op_vt_t join_vt = {"wait", join_results, join_cancel, join_free, false};

static fr_task_t *check_task(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, TASK_MT);
}

static bool task_done(const fr_task_t *t)
{
    return t->state == T_OK || t->state == T_ERROR;
}

/* Wait for the tasks in the list at stack index 1: the first to finish (any), or all of them
 * unless one fails first (all). Pushes the 1-based index of the task that finished (any) or
 * failed (all); nothing (nil) when all succeeded or the timeout passed. */
static int join(lua_State *L, bool all, const char *fname)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = -1; /* none */
    if (!lua_isnoneornil(L, 2))
        timeout = fr_duration_arg(L, 2, all ? "wait_all timeout" : "wait_any timeout");
    int n = (int)luaL_len(L, 1);
    if (n == 0 && timeout < 0 && !all)
        return luaL_argerror(L, 1, "no tasks to wait for");
    int pending = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        fr_task_t *t = luaL_testudata(L, -1, TASK_MT);
        if (!t)
            return luaL_error(L, "bad argument #1 to '%s' (element %d is not a task)", fname, i);
        lua_pop(L, 1);
        if (task_done(t) && (!all || t->state != T_OK)) {
            lua_pushinteger(L, i);
            return 1;
        }
        if (!task_done(t))
            pending++;
    }
    if (all && pending == 0)
        return 0;
    join_op_t *j = fr_op_new(L, sizeof *j + (size_t)n * sizeof(waiter_t), &join_vt);
    j->n = n;
    j->all = all;
    j->remaining = pending;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        fr_task_t *t = lua_touserdata(L, -1);
        lua_pop(L, 1);
        waiter_t *w = &j->w[i];
        if (task_done(t))
            continue;
        w->op = &j->base;
        w->target = t;
        w->prev = NULL;
        w->next = t->waiters;
        if (t->waiters)
            t->waiters->prev = w;
        t->waiters = w;
    }
    if (timeout >= 0)
        fr_timer_start(&j->base, fr_now() + timeout);
    return fr_op_wait(L, j);
}

/* core.wait_any(handles [, timeout]) -> index of the first finished task, or nil when the
 * timeout passed. Waits; never raises the tasks' errors. */
static int l_wait_any(lua_State *L)
{
    return join(L, false, "wait_any");
}

/* core.first_results(handles) -> array of each finished task's first result (nil for tasks
 * that failed or have not finished). Does not wait. */
static int l_first_results(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    lua_createtable(L, n, 0);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        fr_task_t *t = luaL_testudata(L, -1, TASK_MT);
        lua_pop(L, 1);
        if (t && t->state == T_OK && t->nres > 0) {
            t->observed = true;
            lua_pushvalue(t->co, 1);
            lua_xmove(t->co, L, 1);
            lua_rawseti(L, -2, i);
        }
    }
    return 1;
}

/* core.wait_all(handles [, timeout]) -> nil when every task succeeded (or the timeout
 * passed), else the index of the first task that failed. Waits; never raises. */
static int l_wait_all(lua_State *L)
{
    return join(L, true, "wait_all");
}

/* Push a finished task's outcome: its results, or raise its error. */
static int push_outcome(lua_State *L, fr_task_t *t)
{
    t->observed = true;
    lua_State *co = t->co;
    if (t->state == T_ERROR) {
        lua_pushvalue(co, -1);
        lua_xmove(co, L, 1);
        return lua_error(L);
    }
    int n = t->nres;
    luaL_checkstack(L, n, "too many results");
    lua_checkstack(co, n);
    for (int i = 1; i <= n; i++)
        lua_pushvalue(co, i);
    lua_xmove(co, L, n);
    return n;
}

static int task_wait_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    fr_task_t *t = lua_touserdata(L, 1);
    return push_outcome(L, t);
}

/* h:wait() -> the task's results; re-raises its error. Waits. */
static int l_task_wait(lua_State *L)
{
    fr_task_t *t = check_task(L, 1);
    lua_settop(L, 1);
    if (task_done(t))
        return push_outcome(L, t);
    fr_task_t *self = fr_task_current(L);
    if (self == t)
        return luaL_error(L, "a task cannot wait for itself");
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushcfunction(L, l_wait_any);
    lua_insert(L, -2);
    lua_callk(L, 1, 1, 0, task_wait_k);
    return task_wait_k(L, LUA_OK, 0);
}

static int l_task_cancel(lua_State *L)
{
    fr_task_t *t = check_task(L, 1);
    lua_pushboolean(L, fr_task_cancel(t));
    return 1;
}

static int l_task_done(lua_State *L)
{
    lua_pushboolean(L, task_done(check_task(L, 1)));
    return 1;
}

static const char *task_status(fr_task_t *t)
{
    if (t->state == T_NEW && t->cancelled)
        return "cancelled";
    if (t->state == T_ERROR && t->cancelled)
        return "cancelled";
    if (t->state == T_ERROR && fr_error_is(t->co, -1, "flow.cancelled"))
        return "cancelled";
    return state_names[t->state];
}

static int l_task_status(lua_State *L)
{
    fr_task_t *t = check_task(L, 1);
    lua_pushstring(L, task_status(t));
    return 1;
}

/* h:result() -> ok, results... without raising (nil, err on failure); only for finished tasks */
static int l_task_result(lua_State *L)
{
    fr_task_t *t = check_task(L, 1);
    if (!task_done(t))
        return luaL_error(L, "task %d has not finished", t->id);
    t->observed = true;
    if (t->state == T_ERROR) {
        lua_pushboolean(L, 0);
        lua_pushvalue(t->co, -1);
        lua_xmove(t->co, L, 1);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_settop(L, 2);
    return push_outcome(L, t) + 1;
}

static int l_task_traceback(lua_State *L)
{
    check_task(L, 1);
    lua_getiuservalue(L, 1, 2);
    return 1;
}

/* h.id, or a method; upvalue 1 is the methods table */
static int l_task_index(lua_State *L)
{
    fr_task_t *t = check_task(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "id") == 0) {
        lua_pushinteger(L, t->id);
        return 1;
    }
    lua_getfield(L, lua_upvalueindex(1), k);
    return 1;
}

static int l_task_tostring(lua_State *L)
{
    fr_task_t *t = check_task(L, 1);
    lua_pushfstring(L, "task %d (%s)", t->id, task_status(t));
    return 1;
}

/* local h <close> = flow.spawn(...): leaving the scope cancels the task if it is still running
 * (it finishes on its own turn; wait for it to know its cleanup ran). */
static int l_task_close(lua_State *L)
{
    fr_task_cancel(check_task(L, 1));
    return 0;
}

/* A failed task whose error nobody read is reported when it is collected. */
static int l_task_gc(lua_State *L)
{
    fr_task_t *t = lua_touserdata(L, 1);
    if (t->state == T_ERROR && !t->observed && !t->is_main &&
        !fr_error_is(t->co, -1, "flow.cancelled")) {
        lua_getiuservalue(L, 1, 2);
        const char *tb = lua_tostring(L, -1);
        fprintf(stderr, "flowrun: task %d failed and no one waited for it: %s\n", t->id,
                tb ? tb : "(error)");
    }
    return 0;
}

/* Create a task running the function at stack position -(nargs+1) with the nargs values above
 * it; pops them and pushes the task handle. Queues it to run. */
fr_task_t *fr_task_spawn(lua_State *L, int nargs)
{
    fr_task_t *t = lua_newuserdatauv(L, sizeof *t, 2);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, TASK_MT);
    t->co = lua_newthread(L);
    lua_setiuservalue(L, -2, 1);
    *(fr_task_t **)lua_getextraspace(t->co) = t;
    t->id = ++S.next_id;
    t->nargs = nargs;
    t->ref = LUA_NOREF;
    /* move function and arguments into the coroutine */
    lua_insert(L, -(nargs + 2));
    lua_xmove(L, t->co, nargs + 1);
    lua_pushvalue(L, -1);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->next_live = S.live;
    if (S.live)
        S.live->prev_live = t;
    S.live = t;
    S.live_count++;
    t->state = T_NEW;
    enqueue(t);
    return t;
}

/* flow.spawn(fn, ...) -> task handle. Does not wait: the task starts on the next turn. */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    fr_task_spawn(L, lua_gettop(L) - 1);
    return 1;
}

/* ---- sleep ----------------------------------------------------------------------------------- */
static const fr_op_vt_t sleep_vt = {"flow.sleep", NULL, NULL, NULL, false};

/* flow.sleep(seconds): waits; 0 gives other tasks a turn; math.huge waits until cancelled. */
static int l_sleep(lua_State *L)
{
    double s = fr_duration_arg(L, 1, "flow.sleep");
    fr_op_t *op = fr_op_new(L, sizeof *op, &sleep_vt);
    if (s == 0)
        op->state = FR_OP_DONE; /* fr_op_wait queues the task at once */
    else
        fr_timer_start(op, fr_now() + s);
    return fr_op_wait(L, op);
}

/* ---- durations ------------------------------------------------------------------------------- */
double fr_duration_arg(lua_State *L, int idx, const char *what)
{
    int isnum;
    lua_Number s = lua_tonumberx(L, idx, &isnum);
    if (!isnum)
        luaL_error(L, "%s: number expected (a duration in seconds), got %s", what,
                   luaL_typename(L, idx));
    if (s != s)
        luaL_error(L, "%s: expected a duration >= 0 in seconds, got NaN", what);
    if (s < 0)
        luaL_error(L, "%s: expected a duration >= 0 in seconds, got %s", what,
                   luaL_tolstring(L, idx, NULL));
    return s < FR_FOREVER ? s : HUGE_VAL;
}

/* core.duration(v [, what]) -> seconds, math.huge for "forever"; raises as fr_duration_arg. */
static int l_duration(lua_State *L)
{
    const char *what = luaL_optstring(L, 2, "duration");
    double s = fr_duration_arg(L, 1, what);
    if (lua_type(L, 1) == LUA_TNUMBER && s < FR_FOREVER)
        lua_pushvalue(L, 1); /* an integer stays one */
    else
        lua_pushnumber(L, s);
    return 1;
}

/* ---- shield ---------------------------------------------------------------------------------- */
static int shield_k(lua_State *L, int status, lua_KContext ctx)
{
    fr_task_t *t = fr_task_current(L);
    t->shield--;
    if (status != LUA_OK && status != LUA_YIELD)
        return lua_error(L);
    return lua_gettop(L) - (int)ctx;
}

/* flow.shield(fn, ...) -> fn's results: fn runs with cancellation deferred. */
static int l_shield(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    fr_task_t *t = fr_task_current(L);
    if (!t)
        return luaL_error(L, "flow.shield can only be called inside a flowrun task");
    t->shield++;
    int st = lua_pcallk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, 0, shield_k);
    return shield_k(L, st, 0);
}

/* ---- the rest of flow.core --------------------------------------------------------------------- */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, fr_now());
    return 1;
}

static int l_time(lua_State *L)
{
    lua_pushnumber(L, fr_time());
    return 1;
}

static int l_current(lua_State *L)
{
    fr_task_t *t = fr_task_current(L);
    if (!t)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
    return 1;
}

static int l_cancelling(lua_State *L)
{
    fr_task_t *t = fr_task_current(L);
    lua_pushboolean(L, t && t->cancelled);
    return 1;
}

static int l_set_virtual_time(lua_State *L)
{
    S.virtual_time = lua_toboolean(L, 1);
    return 0;
}

static int l_virtual_time(lua_State *L)
{
    lua_pushboolean(L, S.virtual_time);
    return 1;
}

static int l_stats(lua_State *L)
{
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, S.live_count);
    lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, S.ops);
    lua_setfield(L, -2, "ops");
    lua_pushinteger(L, S.io_pending);
    lua_setfield(L, -2, "io");
    lua_pushinteger(L, S.heap_len + S.forever);
    lua_setfield(L, -2, "timers");
    lua_pushinteger(L, S.next_id);
    lua_setfield(L, -2, "spawned");
    return 1;
}

static int l_signal(lua_State *L)
{
    if (!S.signal)
        return 0;
    lua_pushinteger(L, S.signal);
    return 1;
}

static int l_cancel_all(lua_State *L)
{
    (void)L;
    fr_sched_cancel_all();
    return 0;
}

/* sys.c: flow.core keeps these two names only until lua/flow/journal.lua calls flow.sys's */

static const luaL_Reg core_funcs[] = {
    {"spawn", l_spawn},
    {"sleep", l_sleep},
    {"duration", l_duration},
    {"wait_any", l_wait_any},
    {"wait_all", l_wait_all},
    {"first_results", l_first_results},
    {"shield", l_shield},
    {"now", l_now},
    {"time", l_time},
    {"current", l_current},
    {"cancelling", l_cancelling},
    {"set_virtual_time", l_set_virtual_time},
    {"virtual_time", l_virtual_time},
    {"stats", l_stats},
    {"signal", l_signal},
    {"cancel_all", l_cancel_all},
    {NULL, NULL},
};

static const luaL_Reg task_methods[] = {
    {"wait", l_task_wait},     {"cancel", l_task_cancel},       {"done", l_task_done},
    {"status", l_task_status}, {"result", l_task_result},       {"traceback", l_task_traceback},
    {NULL, NULL},
};

int fr_error_open(lua_State *L); /* error.c: adds error, is_error, cancelled to the table */

static int luaopen_flow_core(lua_State *L)
{
    luaL_newlib(L, core_funcs);
    fr_error_open(L);
    return 1;
}

FR_MODULE("flow.core", luaopen_flow_core)

/* ---- start, run, stop ------------------------------------------------------------------------- */
void fr_sched_init(lua_State *L)
{
    S.L = L;
    /* new threads copy the main thread's extra space: NULL there means "not a task" */
    *(fr_task_t **)lua_getextraspace(L) = NULL;
    if (uv_loop_init(&S.loop) != 0) {
        fprintf(stderr, "flowrun: cannot start the event loop\n");
        exit(1);
    }
    S.t0 = uv_hrtime();
    struct timeval tv;
    gettimeofday(&tv, NULL);
    S.wall0 = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    uv_timer_init(&S.loop, &S.timer);
    uv_unref((uv_handle_t *)&S.timer);
    install_signals();
    signal(SIGPIPE, SIG_IGN);
    luaL_newmetatable(L, TASK_MT);
    luaL_newlib(L, task_methods);
    lua_pushcclosure(L, l_task_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_task_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, l_task_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_task_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}

/* Run what is queued now (tasks that get a new turn meanwhile wait until after I/O); every
 * 256 tasks, due timers are fired so that their tasks go ahead of the rest. */
static void run_ready(void)
{
    watch(true);
    fr_task_t *last = S.ready.tail;
    int budget = S.live_count + 1;
    unsigned n = 0;
    while (any_ready() && budget-- > 0) {
        fr_task_t *t = dequeue();
        run_task(t);
        if (t == last)
            last = NULL;
        if (!last && !S.woken.head)
            break;
        if ((++n & 255) == 0 && S.heap_len > 0 && S.heap[0]->deadline <= fr_now())
            fire_timers();
    }
    watch(false);
}

/* One turn of the loop that does not block. uv_run polls nothing when no handle is referenced,
 * and the signal handle is not (it must not keep the process alive), so it is referenced for
 * this turn: I/O gets through even while tasks only take turns or the clock jumps. */
static void poll_nowait(void)
{
    uv_ref((uv_handle_t *)&S.wake);
    uv_run(&S.loop, UV_RUN_NOWAIT);
    uv_unref((uv_handle_t *)&S.wake);
}

static void report_deadlock(void)
{
    fprintf(stderr, "flowrun: deadlock: %d task(s) are waiting and nothing can wake them\n",
            S.live_count);
    for (fr_task_t *t = S.live; t; t = t->next_live)
        fprintf(stderr, "  task %d waits on %s\n", t->id, t->op ? t->op->vt->name : "nothing");
    /* nothing will resume these tasks: release what they wait on */
    for (fr_task_t *t = S.live; t; t = t->next_live) {
        fr_op_t *op = t->op;
        if (!op)
            continue;
        t->op = NULL;
        if (op->vt->cancel && !op->vt->cancel(op))
            op->task = NULL; /* its callback frees it */
        else
            free_op(op);
    }
}

/* Run until the task finishes (and everything it left is cancelled and finished when `all`).
 * Returns false on a deadlock. */
bool fr_sched_run(fr_task_t *main, bool all)
{
    main->is_main = true;
    bool cancelled_rest = false;
    for (;;) {
        if (W.pending)
            deliver_signal();
        if (any_ready())
            run_ready();
        if (task_done(main)) {
            if (!all || S.live_count == 0)
                return true;
            /* the main task ended: cancel what it left behind and let their cleanups run */
            if (!cancelled_rest) {
                cancelled_rest = true;
                fr_sched_cancel_all();
                continue;
            }
        }
        if (any_ready()) {
            poll_nowait();
            continue;
        }
        if (S.virtual_time && S.io_pending == 0 && S.heap_len > 0) {
            /* poll once first: signals (and anything else libuv watches) must get through
             * even when the clock only ever jumps */
            poll_nowait();
            if (any_ready())
                continue;
            double gap = S.heap[0]->deadline - fr_now();
            if (gap > 0)
                S.voffset += gap;
            fire_timers();
            continue;
        }
        if (S.heap_len > 0)
            uv_ref((uv_handle_t *)&S.timer);
        else
            uv_unref((uv_handle_t *)&S.timer);
        /* a task waiting "forever" (flow.sleep(math.huge)) is no deadlock: it waits for a
         * signal, which is what can end it */
        if (S.forever > 0)
            uv_ref((uv_handle_t *)&S.wake);
        else
            uv_unref((uv_handle_t *)&S.wake);
        if (!uv_loop_alive(&S.loop)) {
            report_deadlock();
            return false;
        }
        uv_run(&S.loop, UV_RUN_ONCE);
    }
}

bool fr_task_ok(fr_task_t *t)
{
    return t->state == T_OK;
}

lua_State *fr_task_thread(fr_task_t *t)
{
    return t->co;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void fr_sched_shutdown(void)
{
    for (int i = 0; i < S.nshutdown; i++)
        S.shutdown_fns[i]();
    uv_unref((uv_handle_t *)&S.wake); /* referenced while a task waited forever */
    uv_run(&S.loop, UV_RUN_DEFAULT);
    if (W.watch_ok) {
        W.watch_ok = 0; /* first: a tick still on its way must not touch the timer */
        set_watch(false);
        timer_delete(W.watch);
    }
    W.closed = 1; /* a signal from now on is recorded (a second one still exits) */
    uv_close((uv_handle_t *)&S.timer, NULL);
    uv_close((uv_handle_t *)&S.wake, NULL);
    uv_walk(&S.loop, close_walk, NULL);
    uv_run(&S.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&S.loop) != 0)
        fprintf(stderr, "flowrun: warning: event loop closed with handles still open\n");
    free(S.heap);
    S.heap = NULL;
}
