-- gzip — decompressing gzip members in pure Lua (RFC 1951 inflate, RFC 1952 framing), for
-- reading EMR's gzipped step logs from S3. Small texts only: it builds the output in memory.
--
--   local text = require("gzip").decompress(body)   -- raises on a damaged stream
local M = {}

local function reader(s, pos)
  local bitbuf, bitcnt = 0, 0
  local r = {}
  function r.bits(n)
    while bitcnt < n do
      local b = s:byte(pos)
      if not b then error("gzip: stream is truncated", 0) end
      pos = pos + 1
      bitbuf = bitbuf | (b << bitcnt)
      bitcnt = bitcnt + 8
    end
    local v = bitbuf & ((1 << n) - 1)
    bitbuf = bitbuf >> n
    bitcnt = bitcnt - n
    return v
  end
  function r.align() bitbuf, bitcnt = 0, 0 end
  function r.bytes(n)
    local out = s:sub(pos, pos + n - 1)
    if #out < n then error("gzip: stream is truncated", 0) end
    pos = pos + n
    return out
  end
  function r.pos() return pos end
  return r
end

-- Canonical Huffman decoding table from code lengths: {[len] = {[code] = symbol}}.
local function huffman(lengths, n)
  local count, offs = {}, {}
  for l = 0, 15 do count[l] = 0 end
  for i = 0, n - 1 do
    local l = lengths[i] or 0
    count[l] = count[l] + 1
  end
  local code = 0
  count[0] = 0
  for l = 1, 15 do
    code = (code + count[l - 1]) << 1
    offs[l] = code
  end
  local t = {}
  for i = 0, n - 1 do
    local l = lengths[i] or 0
    if l > 0 then
      t[l] = t[l] or {}
      t[l][offs[l]] = i
      offs[l] = offs[l] + 1
    end
  end
  return t
end

local function decode(r, t)
  local code, len = 0, 0
  repeat
    code = (code << 1) | r.bits(1)
    len = len + 1
    local row = t[len]
    if row and row[code] then return row[code] end
  until len >= 15
  error("gzip: bad Huffman code", 0)
end

local LBASE = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83,
               99, 115, 131, 163, 195, 227, 258}
local LEXT = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
local DBASE = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
               1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
local DEXT = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
              12, 12, 13, 13}
local CLORDER = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

local fixed_lit, fixed_dist
local function fixed_tables()
  if not fixed_lit then
    local l = {}
    for i = 0, 143 do l[i] = 8 end
    for i = 144, 255 do l[i] = 9 end
    for i = 256, 279 do l[i] = 7 end
    for i = 280, 287 do l[i] = 8 end
    fixed_lit = huffman(l, 288)
    local d = {}
    for i = 0, 29 do d[i] = 5 end
    fixed_dist = huffman(d, 30)
  end
  return fixed_lit, fixed_dist
end

local function dynamic_tables(r)
  local hlit, hdist, hclen = r.bits(5) + 257, r.bits(5) + 1, r.bits(4) + 4
  local cl = {}
  for i = 1, hclen do cl[CLORDER[i]] = r.bits(3) end
  local clt = huffman(cl, 19)
  local lens, i = {}, 0
  while i < hlit + hdist do
    local sym = decode(r, clt)
    if sym < 16 then
      lens[i] = sym; i = i + 1
    else
      local rep, val
      if sym == 16 then
        if i == 0 then error("gzip: bad code lengths", 0) end
        rep, val = 3 + r.bits(2), lens[i - 1]
      elseif sym == 17 then rep, val = 3 + r.bits(3), 0
      else rep, val = 11 + r.bits(7), 0 end
      for _ = 1, rep do lens[i] = val; i = i + 1 end
    end
  end
  local ll, dl = {}, {}
  for k = 0, hlit - 1 do ll[k] = lens[k] end
  for k = 0, hdist - 1 do dl[k] = lens[hlit + k] end
  return huffman(ll, hlit), huffman(dl, hdist)
end

-- inflate(s, pos) -> data, position after the deflate stream
function M.inflate(s, pos)
  local r = reader(s, pos or 1)
  local out = {}   -- bytes as numbers (back references need random access)
  local n = 0
  repeat
    local final = r.bits(1)
    local btype = r.bits(2)
    if btype == 0 then
      r.align()
      local len, nlen = string.unpack("<I2I2", r.bytes(4))
      if len ~= (~nlen & 0xFFFF) then error("gzip: bad stored block length", 0) end
      local chunk = r.bytes(len)
      for k = 1, len do out[n + k] = chunk:byte(k) end
      n = n + len
    elseif btype == 1 or btype == 2 then
      local lit, dist
      if btype == 1 then lit, dist = fixed_tables() else lit, dist = dynamic_tables(r) end
      while true do
        local sym = decode(r, lit)
        if sym < 256 then
          n = n + 1; out[n] = sym
        elseif sym == 256 then
          break
        else
          sym = sym - 257
          if sym >= 29 then error("gzip: bad length code", 0) end
          local len = LBASE[sym + 1] + r.bits(LEXT[sym + 1])
          local ds = decode(r, dist)
          if ds >= 30 then error("gzip: bad distance code", 0) end
          local d = DBASE[ds + 1] + r.bits(DEXT[ds + 1])
          if d > n then error("gzip: distance too far back", 0) end
          for _ = 1, len do n = n + 1; out[n] = out[n - d] end
        end
      end
    else
      error("gzip: bad block type", 0)
    end
  until final == 1
  local parts = {}
  for k = 1, n, 4096 do
    parts[#parts + 1] = string.char(table.unpack(out, k, math.min(n, k + 4095)))
  end
  r.align()
  return table.concat(parts), r.pos()
end

-- decompress(gz) -> data: every member of a gzip file, concatenated.
function M.decompress(s)
  local pos, parts = 1, {}
  while pos <= #s do
    local id1, id2, cm, flg = s:byte(pos, pos + 3)
    if id1 ~= 31 or id2 ~= 139 or cm ~= 8 then error("gzip: not a gzip stream", 0) end
    pos = pos + 10
    if flg & 4 ~= 0 then local xlen = string.unpack("<I2", s, pos); pos = pos + 2 + xlen end
    if flg & 8 ~= 0 then pos = (s:find("\0", pos, true) or #s) + 1 end
    if flg & 16 ~= 0 then pos = (s:find("\0", pos, true) or #s) + 1 end
    if flg & 2 ~= 0 then pos = pos + 2 end
    local data, after = M.inflate(s, pos)
    if after + 7 > #s then error("gzip: stream is truncated", 0) end
    local size = string.unpack("<I4", s, after + 4)
    if size ~= #data & 0xFFFFFFFF then error("gzip: size check failed", 0) end
    parts[#parts + 1] = data
    pos = after + 8
  end
  return table.concat(parts)
end

return M
