/*
 * fuzz_sigv4.c — libFuzzer harness for runtime/sigv4.c: sign requests made of arbitrary method,
 * path, query, region, service, credentials, body and headers (fields separated by byte 0x01;
 * the first byte picks the options), header signing and presigning, and check what must hold:
 *   - sign either refuses with a "sigv4: " message (misuse) or signs;
 *   - the string to sign is the algorithm, the date, the scope and the hash of the canonical
 *     request; the signature is the HMAC chain of the secret over it (recomputed here);
 *   - a presigned query carries X-Amz-Credential = the access key and scope given, encoded
 *     (heap bytes came out there once), the signature and the signed headers; the Authorization
 *     header says exactly the same;
 *   - the same request signs the same again, with the same signer and with a fresh one.
 */
#include "fuzz.h"

static const char *checks =
    "local flags, f = ...\n"
    "local sigv4 = M\n"
    "local method, path, query, region, service, ak, sk, token, body =\n"
    "  f[1] or '', f[2] or '', f[3] or '', f[4] or '', f[5] or '', f[6] or '', f[7] or '',\n"
    "  f[8] or '', f[9] or ''\n"
    "local hdrs = table.move(f, 10, #f, 1, {})\n"
    "local creds = {access_key = ak, secret_key = sk, token = flags & 16 ~= 0 and token or nil}\n"
    "local ok, signer = pcall(sigv4.new, creds)\n"
    "if not ok then\n"
    "  if tostring(signer):find('^sigv4.new: ') then return end\n"
    "  return 'new raised: ' .. tostring(signer)\n"
    "end\n"
    "local function req()\n"
    "  local h = {}\n"
    "  for i = 1, #hdrs, 2 do\n"
    "    if flags & 32 ~= 0 then h[#h + 1] = {hdrs[i], hdrs[i + 1] or ''}\n"
    "    else h[hdrs[i]] = hdrs[i + 1] or '' end\n"
    "  end\n"
    "  return {method = method, path = path, query = query, region = region, service = service,\n"
    "    body = body, headers = h, normalize = flags & 1 ~= 0, sign_body = flags & 2 ~= 0,\n"
    "    omit_session_token = flags & 4 ~= 0, presign = flags & 8 ~= 0 and 300 or nil,\n"
    "    time = 1440938160 + (flags >> 6) * 86400 * 400, debug = true}\n"
    "end\n"
    "local r1 = req()\n"
    "local ok1, sig, info = pcall(signer.sign, signer, r1)\n"
    "if not ok1 then\n"
    "  if type(sig) == 'string' and sig:find('^sigv4: ') then return end\n"
    "  return 'sign raised: ' .. tostring(sig)\n"
    "end\n"
    "if #sig ~= 64 or sig:find('[^0-9a-f]') then return 'signature shape' end\n"
    "local amz = info.string_to_sign:match('^AWS4%-HMAC%-SHA256\\n(%d+T%d+Z)\\n')\n"
    "if not amz then return 'string to sign: no date' end\n"
    "local date = amz:sub(1, 8)\n"
    "local scope = date .. '/' .. region .. '/' .. service .. '/aws4_request'\n"
    "local sts = 'AWS4-HMAC-SHA256\\n' .. amz .. '\\n' .. scope .. '\\n' ..\n"
    "  sigv4.sha256_hex(info.canonical_request)\n"
    "if info.string_to_sign ~= sts then return 'string to sign' end\n"
    "if info.canonical_request:sub(1, #method + 1) ~= method .. '\\n' then\n"
    "  return 'canonical request: method'\n"
    "end\n"
    "local H = sigv4.hmac_sha256\n"
    "local key = H(H(H(H('AWS4' .. sk, date), region), service), 'aws4_request')\n"
    "if sigv4.hex(H(key, sts)) ~= sig then return 'signature is not the HMAC chain' end\n"
    "local cred = ak .. '/' .. scope\n"
    "if flags & 8 ~= 0 then\n"
    "  -- the request's own query may hold the same names: one of them must be ours\n"
    "  local q = '&' .. info.query\n"
    "  local function has(name, want)\n"
    "    for v in q:gmatch('&' .. name .. '=([^&]*)') do if v == want then return true end end\n"
    "  end\n"
    "  if not has('X%-Amz%-Credential', sigv4.uri_encode(cred)) then\n"
    "    return 'X-Amz-Credential is not ' .. sigv4.uri_encode(cred) .. ' in ' .. q\n"
    "  end\n"
    "  if not has('X%-Amz%-Signature', sig) then return 'X-Amz-Signature' end\n"
    "  if not has('X%-Amz%-SignedHeaders', sigv4.uri_encode(info.signed_headers)) then\n"
    "    return 'X-Amz-SignedHeaders'\n"
    "  end\n"
    "else\n"
    "  local auth = 'AWS4-HMAC-SHA256 Credential=' .. cred .. ', SignedHeaders=' ..\n"
    "    info.signed_headers .. ', Signature=' .. sig\n"
    "  -- an empty headers table cannot say it is an array: the signer writes it as a map\n"
    "  local got = r1.headers.Authorization\n"
    "  for _, p in ipairs(r1.headers) do if p[1] == 'Authorization' then got = p[2] end end\n"
    "  if got ~= auth or info.authorization ~= auth then return 'Authorization header' end\n"
    "end\n"
    "if signer:sign(req()) ~= sig then return 'signed differently the second time' end\n"
    "if sigv4.new(creds):sign(req()) ~= sig then return 'a fresh signer signs differently' end\n";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    lua_State *L = fuzz_state("aws.sigv4", checks);
    lua_pushinteger(L, size ? data[0] : 0);
    lua_newtable(L);
    size_t i = size ? 1 : 0, start = i;
    lua_Integer n = 0;
    for (; i <= size; i++) {
        if (i == size || data[i] == 1) {
            lua_pushlstring(L, (const char *)data + start, i - start);
            lua_rawseti(L, -2, ++n);
            start = i + 1;
        }
    }
    fuzz_check(L, 2, "sigv4");
    lua_close(L);
    return 0;
}
