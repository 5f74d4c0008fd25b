/*
 * xml.c — XML text to Lua tables with expat (pure: no loop), module "xml". Used for S3 and
 * STS answers and their errors.
 *
 *   xml.decode(s) -> node | nil, err
 *     node = {name = "ListBucketResult", attrs = {xmlns = "..."}, text = "...", [1] = child, ...}
 *     Children are nodes in the array part, in document order. `text` is the element's
 *     character data; for an element with children, whitespace-only text is left out.
 *     A malformed or truncated document gives nil and an "xml.decode" error object whose
 *     message is "invalid XML at line L, column C: <reason>". A non-string argument raises.
 *   xml.escape(s) -> s with & < > " ' escaped, for building request bodies.
 *
 * Ownership: the expat parser and the text buffer belong to a userdata ("flowrun.xml.parser")
 * anchored on the Lua stack during decode, so a Lua error raised inside an expat callback (out
 * of memory) leaves nothing behind: __gc frees them. External entities are never loaded, and
 * expat's own amplification limits stop entity expansion attacks.
 */
#include <stdlib.h>
#include <string.h>

#include <expat.h>

#include "flowrun.h"

#define PARSER_MT "flowrun.xml.parser"
#define MAX_DEPTH 256

typedef struct {
    XML_Parser p;
    lua_State *L;
    char *text;
    size_t len, cap;
    size_t starts[MAX_DEPTH + 1]; /* text offset where each open element's text begins */
    int has_children[MAX_DEPTH + 1];
    int depth;
    bool too_deep;
    bool oom;
} xstate_t;

static void xs_free(xstate_t *x)
{
    if (x->p) {
        XML_ParserFree(x->p);
        x->p = NULL;
    }
    free(x->text);
    x->text = NULL;
    x->len = x->cap = 0;
}

static int l_parser_gc(lua_State *L)
{
    xs_free(luaL_checkudata(L, 1, PARSER_MT));
    return 0;
}

static int l_parser_tostring(lua_State *L)
{
    xstate_t *x = luaL_checkudata(L, 1, PARSER_MT);
    lua_pushfstring(L, PARSER_MT " (%s)", x->p ? "open" : "closed");
    return 1;
}

static void on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    xstate_t *x = ud;
    lua_State *L = x->L;
    if (x->depth >= MAX_DEPTH) {
        x->too_deep = true;
        XML_StopParser(x->p, XML_FALSE);
        return;
    }
    if (x->depth > 0)
        x->has_children[x->depth] = 1;
    if (!lua_checkstack(L, 4)) {
        x->oom = true;
        XML_StopParser(x->p, XML_FALSE);
        return;
    }
    lua_createtable(L, 0, 3);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    if (attrs[0]) {
        lua_newtable(L);
        for (int i = 0; attrs[i]; i += 2) {
            lua_pushstring(L, attrs[i + 1]);
            lua_setfield(L, -2, attrs[i]);
        }
        lua_setfield(L, -2, "attrs");
    }
    x->depth++;
    x->starts[x->depth] = x->len;
    x->has_children[x->depth] = 0;
}

static bool all_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

static void on_end(void *ud, const XML_Char *name)
{
    (void)name;
    xstate_t *x = ud;
    lua_State *L = x->L;
    size_t start = x->starts[x->depth];
    const char *t = x->text ? x->text + start : "";
    size_t tl = x->len - start;
    if (!x->has_children[x->depth] || !all_space(t, tl)) {
        lua_pushlstring(L, t, tl);
        lua_setfield(L, -2, "text");
    }
    x->len = start;
    x->depth--;
    if (x->depth > 0) /* append to the parent, just below on the stack */
        lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

static void on_text(void *ud, const XML_Char *s, int n)
{
    xstate_t *x = ud;
    if (x->depth == 0 || n <= 0)
        return;
    if (x->len + (size_t)n > x->cap) {
        size_t cap = x->cap ? x->cap : 256;
        while (cap < x->len + (size_t)n)
            cap *= 2;
        char *p = realloc(x->text, cap);
        if (!p) {
            x->oom = true;
            XML_StopParser(x->p, XML_FALSE);
            return;
        }
        x->text = p;
        x->cap = cap;
    }
    memcpy(x->text + x->len, s, (size_t)n);
    x->len += (size_t)n;
}

/* xml.decode(s) -> node | nil, err. Does not wait. */
static int l_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_settop(L, 1);
    xstate_t *x = lua_newuserdatauv(L, sizeof *x, 0);
    memset(x, 0, sizeof *x);
    luaL_setmetatable(L, PARSER_MT);
    x->p = XML_ParserCreate("UTF-8");
    if (!x->p)
        return luaL_error(L, "xml: out of memory");
    x->L = L;
    XML_SetUserData(x->p, x);
    XML_SetElementHandler(x->p, on_start, on_end);
    XML_SetCharacterDataHandler(x->p, on_text);
    /* base at index 2 (the userdata); nodes are pushed above it */
    if (n > 0x7fffffff)
        return luaL_error(L, "xml: document of %d MB is too large", (int)(n >> 20));
    enum XML_Status st = XML_Parse(x->p, s, (int)n, XML_TRUE);
    if (st != XML_STATUS_OK || x->too_deep || x->oom || lua_gettop(L) != 3) {
        const char *why = x->too_deep           ? "elements nested too deep"
                          : x->oom              ? "out of memory"
                          : st != XML_STATUS_OK ? XML_ErrorString(XML_GetErrorCode(x->p))
                                                : "no root element";
        unsigned long line = XML_GetCurrentLineNumber(x->p);
        unsigned long col = XML_GetCurrentColumnNumber(x->p);
        xs_free(x);
        lua_settop(L, 0);
        lua_pushnil(L);
        lua_pushfstring(L, "invalid XML at line %d, column %d: %s", (int)line, (int)col, why);
        fr_error_push(L, "xml.decode", lua_tostring(L, -1), false);
        lua_remove(L, -2);
        return 2;
    }
    xs_free(x);
    return 1;
}

static int l_escape(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '&':
            luaL_addstring(&b, "&amp;");
            break;
        case '<':
            luaL_addstring(&b, "&lt;");
            break;
        case '>':
            luaL_addstring(&b, "&gt;");
            break;
        case '"':
            luaL_addstring(&b, "&quot;");
            break;
        case '\'':
            luaL_addstring(&b, "&apos;");
            break;
        default:
            luaL_addchar(&b, s[i]);
        }
    }
    luaL_pushresult(&b);
    return 1;
}

static int luaopen_xml(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__gc", l_parser_gc},
                                    {"__close", l_parser_gc},
                                    {"__tostring", l_parser_tostring},
                                    {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"decode", l_decode}, {"escape", l_escape}, {NULL, NULL}};
    if (luaL_newmetatable(L, PARSER_MT))
        luaL_setfuncs(L, meta, 0);
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}

FR_MODULE("xml", luaopen_xml)
