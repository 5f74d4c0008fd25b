/*
 * sys.c — the process and its file system, module "flow.sys": directories, stat, fsync, locks,
 * terminals, signals to other processes, and facts about this process (pid, cwd, where the Lua
 * trees and the shared C units are, versions). Nothing here waits: these are quick local
 * operations, done with libuv's synchronous fs calls (a NULL callback) where libuv has one.
 *
 *   sys.mkdir(path [, mode])   -> true | nil, err   an existing directory is success
 *   sys.mkdir_p(path [, mode]) -> true | nil, err   every missing parent too
 *   sys.readdir(path)          -> {names...} sorted, without . and .. | nil, err
 *   sys.stat(path)             -> {type = "file"|"directory"|"link"|"other", size, mtime, mode}
 *                                 | nil, err        (a symbolic link itself is "link")
 *   sys.unlink(path)           -> true | nil, err
 *   sys.fsync(file)            -> true | nil, err   a Lua io file: flushed, then fsync'd
 *   sys.fsync_dir(path)        -> true | nil, err   makes new entries in the directory durable
 *   sys.truncate(file, size)   -> true | nil, err   a Lua io file cut to size bytes
 *   sys.flock(file)            -> true | nil, err   exclusive, without waiting; err.code is
 *                                 "sys.locked" when another process holds it
 *   sys.isatty(fd)             -> boolean
 *   sys.winsize(fd)            -> cols, rows | nil, err
 *   sys.width(s [, max])       -> cols [, len]   terminal columns the UTF-8 text s takes; with
 *                                 max, also the bytes of its longest prefix taking <= max
 *   sys.getpid()               -> integer
 *   sys.kill(pid, sig)         -> true | nil, err   sig: a number, or "INT", "TERM", "KILL",
 *                                 "HUP", "STOP", "CONT"; 0 probes
 *   sys.cwd(), sys.homedir(), sys.hostname() -> string | nil, err
 *   sys.realpath(path)         -> string | nil, err
 *   sys.set_debug(categories)  -> true | nil, err   an unknown category names the known ones
 *   sys.root, sys.moddir, sys.version, sys.lua_version, sys.uv_version   strings
 *
 * Failures are error objects with code "sys.<ERRNO>" (sys.ENOENT, sys.EACCES, ...; from
 * uv_err_name), a message naming the operation and the path, and fields path and errno (the
 * libuv error name). A wrong argument type raises.
 */
#define _GNU_SOURCE /* wcwidth, newlocale, uselocale */
#include "flowrun.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#ifndef FR_PREFIX
#define FR_PREFIX "/usr/local"
#endif

/* ---- where the Lua trees and the shared units are -------------------------------------------- */
static char root[PATH_MAX];
static char moddir[PATH_MAX];

static bool is_root(const char *dir)
{
    char p[PATH_MAX + 32];
    struct stat st;
    snprintf(p, sizeof p, "%s/lua/flow/init.lua", dir);
    return stat(p, &st) == 0;
}

/* The binary's directory, or false. */
static bool exe_dir(char *buf, size_t size)
{
    size_t len = size;
    if (uv_exepath(buf, &len) != 0)
        return false;
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = 0;
    return true;
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
    if (exe_dir(exe, sizeof exe)) {
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
    if (exe_dir(exe, sizeof exe)) {
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

const char *fr_root(void)
{
    if (!root[0])
        find_root();
    return root;
}

const char *fr_moddir(void)
{
    if (!moddir[0])
        find_moddir();
    return moddir;
}

/* ---- errors -----------------------------------------------------------------------------------
 */
/* Push nil and the error object for libuv error rc: "<what> <path>: <reason>". Returns 2. */
static int fail(lua_State *L, int rc, const char *what, const char *path)
{
    char name[64];
    uv_err_name_r(rc, name, sizeof name);
    lua_pushnil(L);
    lua_pushfstring(L, "sys.%s", name);
    if (path)
        lua_pushfstring(L, "%s %s: %s", what, path, uv_strerror(rc));
    else
        lua_pushfstring(L, "%s: %s", what, uv_strerror(rc));
    fr_error_push(L, lua_tostring(L, -2), lua_tostring(L, -1), false);
    lua_replace(L, -3);
    lua_pop(L, 1);
    if (path) {
        lua_pushstring(L, path);
        lua_setfield(L, -2, "path");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "errno");
    return 2;
}

static int ok(lua_State *L)
{
    lua_pushboolean(L, 1);
    return 1;
}

/* The result of a synchronous uv_fs call, its request cleaned up. */
static int fs_done(uv_fs_t *req, int rc)
{
    uv_fs_req_cleanup(req);
    return rc;
}

static int stat_path(const char *path, uv_stat_t *st, bool follow)
{
    uv_fs_t req;
    int rc =
        follow ? uv_fs_stat(fr_loop(), &req, path, NULL) : uv_fs_lstat(fr_loop(), &req, path, NULL);
    if (rc == 0)
        *st = req.statbuf;
    return fs_done(&req, rc);
}

/* ---- directories ------------------------------------------------------------------------------
 */
static int mkdir_one(const char *path, int mode)
{
    uv_fs_t req;
    int rc = fs_done(&req, uv_fs_mkdir(fr_loop(), &req, path, mode, NULL));
    if (rc == UV_EEXIST) {
        uv_stat_t st;
        if (stat_path(path, &st, true) == 0 && S_ISDIR(st.st_mode))
            return 0;
    }
    return rc;
}

static int check_mode(lua_State *L, int idx)
{
    lua_Integer mode = luaL_optinteger(L, idx, 0777);
    luaL_argcheck(L, mode >= 0 && mode <= 07777, idx, "a mode between 0 and 07777 expected");
    return (int)mode;
}

/* sys.mkdir(path [, mode]) -> true | nil, err. An existing directory is success. */
static int l_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int rc = mkdir_one(path, check_mode(L, 2));
    return rc == 0 ? ok(L) : fail(L, rc, "mkdir", path);
}

/* Create path and its missing parents; on failure `failed` names the directory that failed. */
static int mkdir_parents(char *path, int mode, const char **failed)
{
    int rc = mkdir_one(path, mode);
    if (rc != UV_ENOENT) {
        *failed = path;
        return rc;
    }
    char *slash = strrchr(path, '/');
    while (slash && slash > path && slash[-1] == '/')
        slash--;
    if (!slash || slash == path) {
        *failed = path;
        return rc;
    }
    *slash = 0;
    rc = mkdir_parents(path, mode, failed);
    if (rc != 0)
        return rc; /* path is cut at the parent that failed: the message names it */
    *slash = '/';
    rc = mkdir_one(path, mode);
    *failed = path;
    return rc;
}

/* sys.mkdir_p(path [, mode]) -> true | nil, err: path and every missing parent (mkdir -p). */
static int l_mkdir_p(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    int mode = check_mode(L, 2);
    luaL_argcheck(L, len > 0, 1, "an empty path");
    char *copy = lua_newuserdatauv(L, len + 1, 0); /* collected with the call */
    memcpy(copy, path, len + 1);
    while (len > 1 && copy[len - 1] == '/') /* "a/b/" is "a/b" */
        copy[--len] = 0;
    const char *failed = copy;
    int rc = mkdir_parents(copy, mode, &failed);
    return rc == 0 ? ok(L) : fail(L, rc, "mkdir", failed);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* sys.readdir(path) -> {names...} sorted (byte order), without "." and ".." | nil, err */
static int l_readdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t req;
    int n = uv_fs_scandir(fr_loop(), &req, path, 0, NULL);
    if (n < 0)
        return fail(L, fs_done(&req, n), "readdir", path);
    /* each uv_fs_scandir_next frees the previous entry: the names are copied into a table
     * first (which anchors them), then sorted through an array of pointers to them */
    lua_createtable(L, n, 0);
    int k = 0;
    uv_dirent_t ent;
    while (uv_fs_scandir_next(&req, &ent) == 0) {
        lua_pushstring(L, ent.name);
        lua_rawseti(L, -2, ++k);
    }
    uv_fs_req_cleanup(&req);
    const char **names = lua_newuserdatauv(L, sizeof *names * ((size_t)k + 1), 0);
    for (int i = 0; i < k; i++) {
        lua_rawgeti(L, -2, i + 1);
        names[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    qsort(names, (size_t)k, sizeof *names, cmp_names);
    lua_createtable(L, k, 0);
    for (int i = 0; i < k; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static const char *type_name(uint64_t mode)
{
    if (S_ISREG(mode))
        return "file";
    if (S_ISDIR(mode))
        return "directory";
    if (S_ISLNK(mode))
        return "link";
    return "other";
}

/* sys.stat(path) -> {type, size, mtime (seconds since the epoch), mode (permission bits)}; a
 * symbolic link is described itself ("link"), not what it points to. nil, err on failure. */
static int l_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uv_stat_t st;
    int rc = stat_path(path, &st, false);
    if (rc != 0)
        return fail(L, rc, "stat", path);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, type_name(st.st_mode));
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    lua_setfield(L, -2, "mode");
    return 1;
}

/* sys.unlink(path) -> true | nil, err */
static int l_unlink(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t req;
    int rc = fs_done(&req, uv_fs_unlink(fr_loop(), &req, path, NULL));
    return rc == 0 ? ok(L) : fail(L, rc, "unlink", path);
}

/* ---- files ------------------------------------------------------------------------------------
 */
/* The FILE* of an open Lua file handle at idx; raises for anything else. */
static FILE *check_file(lua_State *L, int idx)
{
    luaL_Stream *p = luaL_checkudata(L, idx, LUA_FILEHANDLE);
    if (!p->closef)
        luaL_error(L, "attempt to use a closed file");
    return p->f;
}

/* The path of an open descriptor, for messages (Linux: /proc/self/fd). */
static const char *fd_path(int fd, char *buf, size_t size)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, size - 1);
    if (n <= 0)
        snprintf(buf, size, "(descriptor %d)", fd);
    else
        buf[n] = 0;
    return buf;
}

static int fsync_fd(int fd)
{
    uv_fs_t req;
    return fs_done(&req, uv_fs_fsync(fr_loop(), &req, fd, NULL));
}

/* sys.fsync(file) -> true | nil, err: flush the Lua file's buffer, then fsync it. */
static int l_fsync(lua_State *L)
{
    FILE *f = check_file(L, 1);
    int fd = fileno(f);
    int rc = fflush(f) == 0 ? fsync_fd(fd) : uv_translate_sys_error(errno);
    char buf[PATH_MAX];
    return rc == 0 ? ok(L) : fail(L, rc, "fsync", fd_path(fd, buf, sizeof buf));
}

/* sys.truncate(file, size) -> true | nil, err: flush the Lua file's buffer, then cut the file to
 * size bytes (uv_fs_ftruncate). The journal drops a last line cut by a crash in place, so the file
 * it locks stays the file it writes. */
static int l_truncate(lua_State *L)
{
    FILE *f = check_file(L, 1);
    lua_Integer size = luaL_checkinteger(L, 2);
    luaL_argcheck(L, size >= 0, 2, "a size >= 0 expected");
    int fd = fileno(f);
    uv_fs_t req;
    int rc = fflush(f) == 0 ? fs_done(&req, uv_fs_ftruncate(fr_loop(), &req, fd, size, NULL))
                            : uv_translate_sys_error(errno);
    char buf[PATH_MAX];
    return rc == 0 ? ok(L) : fail(L, rc, "truncate", fd_path(fd, buf, sizeof buf));
}

/* sys.fsync_dir(path) -> true | nil, err: fsync a directory, so that an entry just created in
 * it (a new journal file) survives a crash. */
static int l_fsync_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t req;
    int fd = fs_done(&req, uv_fs_open(fr_loop(), &req, path, O_RDONLY | O_DIRECTORY, 0, NULL));
    if (fd < 0)
        return fail(L, fd, "fsync_dir", path);
    int rc = fsync_fd(fd);
    fs_done(&req, uv_fs_close(fr_loop(), &req, fd, NULL));
    return rc == 0 ? ok(L) : fail(L, rc, "fsync_dir", path);
}

/* sys.flock(file) -> true | nil, err. An exclusive lock on a Lua file, without waiting; the
 * kernel drops it when the file is closed or the process dies, so a crashed run leaves no
 * stale lock behind. libuv has no lock call. */
static int l_flock(lua_State *L)
{
    FILE *f = check_file(L, 1);
    int fd = fileno(f);
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        return ok(L);
    int e = errno;
    char buf[PATH_MAX];
    fd_path(fd, buf, sizeof buf);
    if (e == EWOULDBLOCK) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s is locked by another process", buf);
        fr_error_push(L, "sys.locked", lua_tostring(L, -1), false);
        lua_remove(L, -2);
        lua_pushstring(L, buf);
        lua_setfield(L, -2, "path");
        return 2;
    }
    return fail(L, uv_translate_sys_error(e), "flock", buf);
}

/* ---- terminals --------------------------------------------------------------------------------
 */
static int check_fd(lua_State *L, int idx)
{
    lua_Integer fd = luaL_checkinteger(L, idx);
    luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, idx, "a file descriptor expected");
    return (int)fd;
}

static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, uv_guess_handle(check_fd(L, 1)) == UV_TTY);
    return 1;
}

/* sys.winsize(fd) -> cols, rows | nil, err. uv_tty_get_winsize needs a uv_tty_t, and making
 * one switches the descriptor to non-blocking mode (stdio's writes to stdout would then fail
 * with EAGAIN) and needs a loop turn to close: the ioctl it makes is made here directly. */
static int l_winsize(lua_State *L)
{
    int fd = check_fd(L, 1);
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) != 0) {
        char what[32];
        snprintf(what, sizeof what, "winsize of descriptor %d", fd);
        return fail(L, uv_translate_sys_error(errno), what, NULL);
    }
    lua_pushinteger(L, ws.ws_col);
    lua_pushinteger(L, ws.ws_row);
    return 2;
}

/* ---- display width ------------------------------------------------------------------------------
 * A terminal gives an East Asian wide character or an emoji two columns, a combining mark none.
 * libc's wcwidth knows which (glibc follows Unicode's EastAsianWidth and emoji data), but only
 * under a UTF-8 locale, and the process's own may be "C": it is asked under C.UTF-8 (glibc 2.35+
 * has it built in), whatever the environment says. */
static locale_t utf8_locale;
static bool utf8_locale_tried;

/* The code point at s[i..n) and its length, or -1 and length 1 for a byte that does not start
 * a valid UTF-8 sequence (overlong, surrogate, beyond U+10FFFF, cut short). */
static long utf8_next(const unsigned char *s, size_t i, size_t n, size_t *len)
{
    unsigned char c = s[i];
    long cp;
    size_t k;
    *len = 1;
    if (c < 0x80)
        return c;
    if (c >= 0xC2 && c <= 0xDF) {
        cp = c & 0x1F;
        k = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        cp = c & 0x0F;
        k = 2;
    } else if (c >= 0xF0 && c <= 0xF4) {
        cp = c & 0x07;
        k = 3;
    } else {
        return -1;
    }
    if (i + k >= n)
        return -1;
    for (size_t j = 1; j <= k; j++) {
        if ((s[i + j] & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (s[i + j] & 0x3F);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *len = k + 1;
    return cp;
}

/* sys.width(s [, max]) -> cols [, len]. An invalid byte or a control character counts 1 (a
 * terminal shows a replacement glyph, or the caller has replaced it already). With max: len is
 * the length in bytes of the longest prefix of s taking at most max columns, zero-width
 * characters right after it included (they belong to the character before them). */
static int l_width(lua_State *L)
{
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    lua_Integer max = luaL_optinteger(L, 2, -1);
    if (!utf8_locale_tried) {
        utf8_locale_tried = true;
        utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    }
    locale_t old = utf8_locale ? uselocale(utf8_locale) : (locale_t)0;
    lua_Integer cols = 0;
    size_t i = 0, cut = max >= 0 ? n : 0;
    bool cut_found = false;
    while (i < n) {
        size_t len;
        long cp = utf8_next(s, i, n, &len);
        int w = cp < 0 ? 1 : wcwidth((wchar_t)cp);
        if (w < 0)
            w = 1;
        if (max >= 0 && !cut_found && cols + w > max) {
            cut = i;
            cut_found = true;
        }
        cols += w;
        i += len;
    }
    if (old)
        uselocale(old);
    lua_pushinteger(L, cols);
    if (max < 0)
        return 1;
    lua_pushinteger(L, (lua_Integer)cut);
    return 2;
}

/* ---- processes --------------------------------------------------------------------------------
 */
static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, uv_os_getpid());
    return 1;
}

static const struct {
    const char *name;
    int sig;
} signals[] = {{"INT", SIGINT}, {"TERM", SIGTERM}, {"KILL", SIGKILL},
               {"HUP", SIGHUP}, {"STOP", SIGSTOP}, {"CONT", SIGCONT}};

/* sys.kill(pid, sig) -> true | nil, err (sys.ESRCH: no such process; sys.EPERM) */
static int l_kill(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    luaL_argcheck(L, pid >= INT_MIN && pid <= INT_MAX, 1, "a process id expected");
    int sig = -1;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 0 && n < 65, 2, "a signal number expected");
        sig = (int)n;
    } else {
        const char *s = luaL_checkstring(L, 2);
        for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++)
            if (strcmp(s, signals[i].name) == 0)
                sig = signals[i].sig;
        if (sig < 0)
            return luaL_argerror(
                L, 2,
                lua_pushfstring(L,
                                "unknown signal '%s' (INT, TERM, KILL, HUP, STOP, CONT "
                                "or a number)",
                                s));
    }
    int rc = uv_kill((int)pid, sig);
    if (rc != 0) {
        char what[64];
        snprintf(what, sizeof what, "kill %d", (int)pid);
        return fail(L, rc, what, NULL);
    }
    return ok(L);
}

/* A string from a libuv call filling a buffer (uv_cwd, uv_os_homedir, ...) | nil, err */
static int buffer_string(lua_State *L, int (*fn)(char *, size_t *), const char *what)
{
    char buf[PATH_MAX + 1];
    size_t len = sizeof buf;
    int rc = fn(buf, &len);
    if (rc != 0)
        return fail(L, rc, what, NULL);
    lua_pushlstring(L, buf, len);
    return 1;
}

static int l_cwd(lua_State *L)
{
    return buffer_string(L, uv_cwd, "cwd");
}

static int l_homedir(lua_State *L)
{
    return buffer_string(L, uv_os_homedir, "homedir");
}

static int l_hostname(lua_State *L)
{
    return buffer_string(L, uv_os_gethostname, "hostname");
}

/* sys.realpath(path) -> the absolute path without symbolic links | nil, err */
static int l_realpath(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    uv_fs_t req;
    int rc = uv_fs_realpath(fr_loop(), &req, path, NULL);
    if (rc != 0)
        return fail(L, fs_done(&req, rc), "realpath", path);
    lua_pushstring(L, req.ptr);
    uv_fs_req_cleanup(&req);
    return 1;
}

static int l_set_debug(lua_State *L)
{
    return fr_debug_set_lua(L, 1);
}

static int luaopen_sys(lua_State *L)
{
    static const luaL_Reg f[] = {
        {"mkdir", l_mkdir},
        {"mkdir_p", l_mkdir_p},
        {"readdir", l_readdir},
        {"stat", l_stat},
        {"unlink", l_unlink},
        {"fsync", l_fsync},
        {"fsync_dir", l_fsync_dir},
        {"flock", l_flock},
        {"truncate", l_truncate},
        {"isatty", l_isatty},
        {"winsize", l_winsize},
        {"width", l_width},
        {"getpid", l_getpid},
        {"kill", l_kill},
        {"cwd", l_cwd},
        {"realpath", l_realpath},
        {"homedir", l_homedir},
        {"hostname", l_hostname},
        {"set_debug", l_set_debug},
        {NULL, NULL},
    };
    luaL_newlib(L, f);
    lua_pushstring(L, fr_root());
    lua_setfield(L, -2, "root");
    lua_pushstring(L, fr_moddir());
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
