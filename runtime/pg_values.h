/*
 * pg_values.h — the PostgreSQL value codec (pg_values.c): type OIDs and Lua values, no loop and
 * no connection. Shared by pg.c, tests/c/test_pg_values.c and tests/fuzz/fuzz_pg_values.c.
 */
#ifndef FR_PG_VALUES_H
#define FR_PG_VALUES_H

#include <postgres_ext.h> /* Oid: a typedef, no libpq code */

#include "flowrun.h"

/* The OIDs the codec treats specially (pg_type.dat). */
enum {
    FR_OID_BOOL = 16,
    FR_OID_BYTEA = 17,
    FR_OID_INT8 = 20,
    FR_OID_INT2 = 21,
    FR_OID_INT4 = 23,
    FR_OID_TEXT = 25,
    FR_OID_OID = 26,
    FR_OID_JSON = 114,
    FR_OID_FLOAT4 = 700,
    FR_OID_FLOAT8 = 701,
    FR_OID_TIMESTAMP = 1114,
    FR_OID_TIMESTAMPTZ = 1184,
    FR_OID_NUMERIC = 1700,
    FR_OID_JSONB = 3802,
};

/* Decoding flags. */
#define FR_PG_NUMERIC_NUMBER 1 /* numeric as a Lua number (may round) instead of exact text */

/* The type's name as PostgreSQL spells it ("int4", "text[]"), or NULL when the codec does not
 * know the type. */
const char *fr_pg_type_name(Oid oid);

/* Push the Lua value of a non-NULL field sent in text form. Never fails on what it reads: a
 * value it cannot read (or of a type it does not know) comes back as the string it is. Raises
 * only when Lua does (out of memory). */
void fr_pg_push_text(lua_State *L, Oid oid, const char *s, size_t len, int flags);

/* Bytes of PostgreSQL's bytea text output (hex "\x..." or the old escape format), decoded as
 * libpq's PQunescapeBytea does, into out (at least len bytes); returns the length. */
size_t fr_pg_unescape_bytea(const char *s, size_t len, char *out);

/* Where s stops being text PostgreSQL can hold (valid UTF-8 without NUL bytes): the offset of
 * the first offending byte, or len when it is all good. */
size_t fr_pg_text_invalid_at(const char *s, size_t len);

/* Parameters as libpq takes them. A parameter with fmts[i] == 1 and types[i] == 0 is a Lua
 * string that is not valid text: it may only go to a bytea parameter (the connection asks the
 * server for the parameter's type first, see pg.c). */
typedef struct {
    int n;
    const char **vals;
    int *lens;
    int *fmts;
    Oid *types;
} fr_pg_params_t;

/* Convert the Lua values at first..first+n-1 in place (each replaced by the string sent) and
 * fill p, whose arrays live in a userdata pushed on the stack. Raises on misuse (a value that
 * cannot be sent, too many parameters). */
void fr_pg_params_build(lua_State *L, int first, int n, fr_pg_params_t *p);

static inline bool fr_pg_param_needs_type(int fmt, Oid type)
{
    return fmt == 1 && type == 0;
}

/* The metatable marking pg.bytea(s) values, created on first use (registry). */
void fr_pg_push_bytea_mt(lua_State *L);

#endif
