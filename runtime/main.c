/*
 * main.c — the flowrun binary: start and stop order, and the module registry.
 *
 * Start: Lua state, scheduler and loop, package.path/cpath (the Lua trees beside the binary in
 * the build tree, or PREFIX/share/flowrun once installed, then LUA_PATH/LUA_CPATH), the C
 * modules in package.preload. Then one main task runs flowrun.cli.main.main(argv) — option parsing,
 * scripts, -e, the REPL and the workflow commands are all Lua (policy in Lua) — and its
 * integer result is the exit code.
 * Stop: the main task has finished and every task it left was cancelled and has finished;
 * lua_close runs the finalizers; then modules' shutdown hooks, and the loop is closed.
 */
#include "flowrun.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <lualib.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* C units that link a heavy library are shared objects (<moddir>/<unit>.so), loaded on the
 * first require of one of their modules, so a run that does not use them does not pay for
 * loading libcurl, libpq or OpenSSL. The Makefile's SHARED_UNITS lists the same units. */
static const struct {
    const char *module, *unit;
} shared_modules[] = {
    {"http", "http"},          {"pg.core", "pg"},       {"xml", "xml"},   {"aws.sigv4", "sigv4"},
    {"flow.readline", "repl"}, {"httpd.core", "httpd"}, {"zlib", "zlib"},
};

static fr_module_t *find_module(const char *name)
{
    for (fr_module_t *m = fr_modules(); m; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/* package.preload loader of a module in a shared unit (upvalue 1: the unit's name) */
static int load_shared(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *unit = lua_tostring(L, lua_upvalueindex(1));
    fr_module_t *m = find_module(name);
    if (!m) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/%s.so", fr_moddir(), unit);
        /* its constructors register its modules (fr_module_register, exported by this
         * binary); the handle stays open for the life of the process */
        if (!dlopen(path, RTLD_NOW | RTLD_LOCAL))
            return luaL_error(L, "cannot load module '%s': %s", name, dlerror());
        m = find_module(name);
        if (!m)
            return luaL_error(L, "cannot load module '%s': %s does not provide it", name, path);
    }
    lua_pushcfunction(L, m->open);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

static void set_paths(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *root = fr_root();
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/stdlib/?.lua;%s/stdlib/?/init.lua;%s",
                    root, root, root, root, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    lua_getfield(L, -1, "preload");
    for (fr_module_t *m = fr_modules(); m; m = m->next) {
        lua_pushcfunction(L, m->open);
        lua_setfield(L, -2, m->name);
    }
    for (size_t i = 0; i < sizeof shared_modules / sizeof shared_modules[0]; i++) {
        if (find_module(shared_modules[i].module))
            continue; /* linked in (C unit tests link everything) */
        lua_pushstring(L, shared_modules[i].unit);
        lua_pushcclosure(L, load_shared, 1);
        lua_setfield(L, -2, shared_modules[i].module);
    }
    lua_pop(L, 2);
}

/* os.execute(cmd) as Lua's, without system(): system() ignores SIGINT and SIGQUIT in the
 * caller while the command runs, so a Ctrl-C then was lost and the run went on. Here the
 * caller's handlers stay: the signal is recorded (and cancels the run once the command
 * returns); the command gets the default dispositions as with system(). It still blocks the
 * loop, as it always did: flow.exec is the call that does not. */
static int l_os_execute(lua_State *L)
{
    const char *cmd = luaL_optstring(L, 1, NULL);
    if (!cmd) { /* is a shell available? */
        lua_pushboolean(L, access("/bin/sh", X_OK) == 0);
        return 1;
    }
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGHUP);
    sigaddset(&dfl, SIGQUIT);
    sigaddset(&dfl, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        return luaL_fileresult(L, 0, NULL);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return luaL_fileresult(L, 0, NULL);
    }
    errno = 0; /* luaL_execresult reads a non-zero errno as a failure to run */
    return luaL_execresult(L, status);
}

/* Lua warnings (errors raised in __gc metamethods among them) go to stderr; an error in a
 * finalizer makes the exit status 1, since the work it should have done did not happen. */
static char warn_buf[1024];
static size_t warn_len;
static bool gc_error;

static void warnf(void *ud, const char *msg, int tocont)
{
    (void)ud;
    if (warn_len == 0 && !tocont && msg[0] == '@')
        return; /* control messages (@on/@off): warnings stay on */
    size_t n = strlen(msg);
    if (n > sizeof warn_buf - 1 - warn_len)
        n = sizeof warn_buf - 1 - warn_len;
    memcpy(warn_buf + warn_len, msg, n);
    warn_len += n;
    warn_buf[warn_len] = 0;
    if (tocont)
        return;
    if (strncmp(warn_buf, "error in __gc", 13) == 0)
        gc_error = true;
    fprintf(stderr, "flowrun: warning: %s\n", warn_buf);
    warn_len = 0;
}

int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "flowrun: cannot create the Lua state (out of memory)\n");
        return 1;
    }
    luaL_openlibs(L);
    lua_getglobal(L, "os");
    lua_pushcfunction(L, l_os_execute);
    lua_setfield(L, -2, "execute");
    lua_pop(L, 1);
    lua_setwarnf(L, warnf, NULL);
    fr_debug_init();
    fr_sched_init(L);
    set_paths(L);

    /* the main task, a Lua function so that everything under it can wait */
    if (luaL_loadstring(L, "return require('flowrun.cli.main').main(...)") != LUA_OK) {
        fprintf(stderr, "flowrun: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    fr_task_t *t = fr_task_spawn(L, 1);
    lua_pushvalue(L, -1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* keep the handle for its outcome */
    lua_pop(L, 1);

    int code = 1;
    if (!fr_sched_run(t, true)) {
        code = 1;
    } else if (fr_task_ok(t)) {
        lua_State *co = fr_task_thread(t);
        code = lua_isinteger(co, -1) ? (int)lua_tointeger(co, -1) : 0;
    } else if (fr_sched_signal()) {
        code = 128 + fr_sched_signal();
    } else {
        /* flowrun.cli.main reports script errors itself; this is an error in the CLI or its setup
         */
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_getiuservalue(L, -1, 2);
        fprintf(stderr, "flowrun: %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
        lua_pop(L, 2);
    }
    fflush(stdout);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    lua_close(L);
    fr_sched_shutdown();
    if (gc_error && code == 0)
        code = 1;
    return code;
}
