/*
 * test_xml.c — the "xml" module (expat -> Lua tables): S3 and STS shaped answers, error
 * documents, entities, attributes, malformed and truncated input, nesting limits, large input.
 */
#include <stdio.h>
#include <string.h>

#include <lualib.h>

#include "flowrun.h"
#include "tap.h"

static lua_CFunction find_module(const char *name)
{
    for (fr_module_t *m = fr_modules(); m; m = m->next)
        if (!strcmp(m->name, name))
            return m->open;
    return NULL;
}

/* Run a chunk with the module as its argument; it returns "ok" or a description. */
static void check(lua_State *L, const char *code, const char *msg)
{
    lua_settop(L, 1);
    const char *r;
    if (luaL_loadstring(L, code) != LUA_OK) {
        r = lua_tostring(L, -1);
    } else {
        lua_pushvalue(L, 1);
        r = lua_pcall(L, 1, 1, 0) == LUA_OK ? lua_tostring(L, -1) : lua_tostring(L, -1);
    }
    tap_streq(r, "ok", msg);
}

int main(void)
{
    lua_CFunction open = find_module("xml");
    if (!tap_ok(open != NULL, "module xml registered"))
        return tap_done();
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);

    check(L,
          "local xml = ...\n"
          "local doc = [[<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n"
          "  <Name>bucket</Name><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>\n"
          "  <Contents><Key>a &amp; b.txt</Key><Size>10</Size></Contents>\n"
          "  <Contents><Key>c&lt;d&#x263A;</Key><Size>0</Size></Contents>\n"
          "  <NextContinuationToken>tok==</NextContinuationToken><Prefix></Prefix>\n"
          "</ListBucketResult>]]\n"
          "local r = assert(xml.decode(doc))\n"
          "assert(r.name == 'ListBucketResult', r.name)\n"
          "assert(r.attrs.xmlns == 'http://s3.amazonaws.com/doc/2006-03-01/')\n"
          "assert(r.text == nil, 'whitespace between children dropped')\n"
          "assert(#r == 7, 'seven children, got ' .. #r)\n"
          "assert(r[1].name == 'Name' and r[1].text == 'bucket')\n"
          "assert(r[4].name == 'Contents' and r[4][1].text == 'a & b.txt')\n"
          "assert(r[5][1].text == 'c<d\\u{263A}', r[5][1].text)\n"
          "assert(r[7].name == 'Prefix' and r[7].text == '', 'empty element has empty text')\n"
          "return 'ok'",
          "S3 ListBucketResult: children in order, entities, attributes, empty text");

    check(L,
          "local xml = ...\n"
          "local r = assert(xml.decode('<Error><Code>NoSuchBucket</Code><Message>The "
          "specified bucket does not exist</Message><BucketName>nope</BucketName>"
          "<RequestId>ABC123</RequestId></Error>'))\n"
          "assert(r.name == 'Error' and r[1].text == 'NoSuchBucket' and r[4].text == "
          "'ABC123')\n"
          "r = assert(xml.decode([[<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/"
          "2011-06-15/\"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>"
          "<Message>bad</Message></Error><RequestId>r-1</RequestId></ErrorResponse>]]))\n"
          "assert(r[1].name == 'Error' and r[1][2].text == 'InvalidClientTokenId' and "
          "r[2].text == 'r-1')\n"
          "return 'ok'",
          "S3 and STS error documents");

    check(L,
          "local xml = ...\n"
          "local r, err = xml.decode('<a><b>x</b>')\n"
          "assert(r == nil and getmetatable(err).__name == 'flowrun.error', 'an error object')\n"
          "assert(err.code == 'xml.decode' and err.retryable == false, err.code)\n"
          "assert(err.message:find('^invalid XML at line 1, column %d+: '), err.message)\n"
          "assert(tostring(err):find('^xml.decode: invalid XML at line 1'), tostring(err))\n"
          "assert(('answer: ' .. err):find('^answer: xml.decode: invalid XML'), 'concatenates')\n"
          "r, err = xml.decode('<a><b></a>')\n"
          "assert(r == nil and err.message:find('mismatched'), err)\n"
          "r, err = xml.decode('')\n"
          "assert(r == nil and err.message:find('invalid XML'), err)\n"
          "r, err = xml.decode('{\"json\": true}')\n"
          "assert(r == nil and err.message:find('not well%-formed'), err)\n"
          "r, err = xml.decode('<a/>junk')\n"
          "assert(r == nil, 'junk after the root')\n"
          "r, err = xml.decode(string.rep('<a>', 300) .. string.rep('</a>', 300))\n"
          "assert(r == nil and err.message:find('too deep'), err)\n"
          "r, err = xml.decode('<!DOCTYPE a [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
          "<a>&e;</a>')\n"
          "assert(r == nil or not (r.text or ''):find('root:'), 'external entity not loaded')\n"
          "assert(not pcall(xml.decode, {}), 'a table is refused')\n"
          "return 'ok'",
          "malformed, truncated, empty, too deep, external entities");

    check(L,
          "local xml = ...\n"
          "local parts = {'<ListBucketResult>'}\n"
          "for i = 1, 60000 do parts[#parts + 1] = '<Contents><Key>key-' .. i .. "
          "'</Key><Size>' .. i .. '</Size></Contents>' end\n"
          "parts[#parts + 1] = '</ListBucketResult>'\n"
          "local doc = table.concat(parts)\n"
          "assert(#doc > 2e6)\n"
          "local r = assert(xml.decode(doc))\n"
          "assert(#r == 60000 and r[60000][1].text == 'key-60000')\n"
          "return 'ok'",
          "a large document (60,000 elements)");

    check(L,
          "local xml = ...\n"
          "assert(xml.escape([[a&b<c>\"d'e]]) == 'a&amp;b&lt;c&gt;&quot;d&apos;e')\n"
          "local r = assert(xml.decode('<v>' .. xml.escape('<&>') .. '</v>'))\n"
          "assert(r.text == '<&>')\n"
          "return 'ok'",
          "escape round-trips");
    lua_close(L);
    return tap_done();
}
