/*
 * main.c — the flowrun binary: start and stop order, and the module registry.
 *
 * Start: Lua state, scheduler and loop, package.path/cpath (the Lua trees beside the binary in
 * the build tree, or PREFIX/share/flowrun once installed, then LUA_PATH/LUA_CPATH), the C
 * modules in package.preload. Then one main task runs flow.cli.main(argv) — option parsing,
 * scripts, -e, the REPL and the workflow commands are all Lua (policy in Lua) — and its
 * integer result is the exit code.
 * Stop: the main task has finished and every task it left was cancelled and has finished;
 * lua_close runs the finalizers; then modules' shutdown hooks, and the loop is closed.
 */
#include "flowrun.h"

#include <dlfcn.h>
#include <limits.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FR_PREFIX
#define FR_PREFIX "/usr/local"
#endif

static char root[PATH_MAX];
static char moddir[PATH_MAX];

/* C units that link a heavy library are shared objects (<moddir>/<unit>.so), loaded on the
 * first require of one of their modules, so a run that does not use them does not pay for
 * loading libcurl, libpq or OpenSSL. The Makefile's SHARED_UNITS lists the same units. */
static const struct {
    const char *module, *unit;
} shared_modules[] = {
    {"http", "http"},          {"pg.core", "pg"},           {"xml", "xml"},
    {"aws.sigv4", "sigv4"},    {"flow.readline", "repl"},   {"zlib", "zlib"},
};

static bool is_root(const char *dir)
{
    char p[PATH_MAX + 32];
    struct stat st;
    snprintf(p, sizeof p, "%s/lua/flow/init.lua", dir);
    return stat(p, &st) == 0;
}

/* Where the Lua trees are: $FLOWRUN_ROOT, the binary's directory or its parent (build tree),
 * PREFIX/share/flowrun beside an installed binary, or the compiled-in prefix. */
static void find_root(void)
{
    const char *env = getenv("FLOWRUN_ROOT");
    if (env && is_root(env)) {
        snprintf(root, sizeof root, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    size_t len = sizeof exe;
    if (uv_exepath(exe, &len) == 0) {
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        const char *cands[] = {"%s", "%s/..", "%s/../share/flowrun"};
        for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
            char p[PATH_MAX + 32];
            snprintf(p, sizeof p, cands[i], exe);
            char real[PATH_MAX];
            if (realpath(p, real) && is_root(real)) {
                snprintf(root, sizeof root, "%s", real);
                return;
            }
        }
    }
    snprintf(root, sizeof root, "%s/share/flowrun", FR_PREFIX);
}

/* Where the shared C units are: beside the build tree's binary (build/lib), beside a build
 * directory's binary (BUILD/lib), or PREFIX/lib/flowrun. */
static void find_moddir(void)
{
    char exe[PATH_MAX];
    size_t len = sizeof exe;
    if (uv_exepath(exe, &len) == 0) {
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        const char *cands[] = {"%s/build/lib", "%s/lib", "%s/../lib/flowrun"};
        for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
            char p[PATH_MAX + 32], probe[PATH_MAX + 64];
            struct stat st;
            snprintf(p, sizeof p, cands[i], exe);
            snprintf(probe, sizeof probe, "%s/http.so", p);
            if (stat(probe, &st) == 0 && realpath(p, moddir))
                return;
        }
    }
    snprintf(moddir, sizeof moddir, "%s/lib/flowrun", FR_PREFIX);
}

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
        snprintf(path, sizeof path, "%s/%s.so", moddir, unit);
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

/* ---- module flow.sys: facts about the process for the Lua CLI --------------------------------- */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

static int l_set_debug(lua_State *L)
{
    fr_debug_set(luaL_optstring(L, 1, ""));
    return 0;
}

/* sys.kill(pid, signal_name_or_number) -> true or nil, message (tests, process control) */
static int l_kill(lua_State *L)
{
    int pid = (int)luaL_checkinteger(L, 1);
    int sig = SIGTERM;
    if (lua_type(L, 2) == LUA_TNUMBER)
        sig = (int)lua_tointeger(L, 2);
    else if (lua_type(L, 2) == LUA_TSTRING) {
        const char *s = lua_tostring(L, 2);
        sig = strcmp(s, "INT") == 0 ? SIGINT : strcmp(s, "KILL") == 0 ? SIGKILL : SIGTERM;
    }
    int rc = uv_kill(pid, sig);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int luaopen_sys(lua_State *L)
{
    static const luaL_Reg f[] = {{"isatty", l_isatty},
                                 {"getpid", l_getpid},
                                 {"set_debug", l_set_debug},
                                 {"kill", l_kill},
                                 {NULL, NULL}};
    luaL_newlib(L, f);
    lua_pushstring(L, root);
    lua_setfield(L, -2, "root");
    lua_pushstring(L, moddir);
    lua_setfield(L, -2, "moddir");
    lua_pushliteral(L, FR_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushliteral(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua_version");
    lua_pushstring(L, uv_version_string());
    lua_setfield(L, -2, "uv_version");
    return 1;
}

FR_MODULE("flow.sys", luaopen_sys)


int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "flowrun: cannot create the Lua state (out of memory)\n");
        return 1;
    }
    luaL_openlibs(L);
    lua_setwarnf(L, warnf, NULL);
    find_root();
    find_moddir();
    fr_sched_init(L);
    set_paths(L);

    /* the main task, a Lua function so that everything under it can wait */
    if (luaL_loadstring(L, "return require('flow.cli').main(...)") != LUA_OK) {
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
        /* flow.cli reports script errors itself; this is an error in flow.cli or its setup */
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
