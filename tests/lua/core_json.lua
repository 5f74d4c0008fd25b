-- The json module: exact integers, null, empty arrays vs objects, errors, base64.
local t = require "tap"
local json = require "json"
local flow = require "flow"

t.test("round trips", function()
  local doc = '{"a":[1,2.5,"x",true,false,null],"b":{"c":{}},"d":[],"big":9007199254740993}'
  local v = json.decode(doc)
  t.eq(v.big, 9007199254740993, "int64 kept exact")
  t.eq(math.type(v.big), "integer", "as an integer")
  t.eq(math.type(v.a[2]), "float", "reals are floats")
  t.ok(v.a[6] == json.null, "null is json.null")
  t.ok(json.is_array(v.d), "an empty array stays marked")
  t.eq(json.encode(v), '{"a":[1,2.5,"x",true,false,null],"b":{"c":{}},"big":9007199254740993,"d":[]}',
    "encodes back the same (keys sorted)")
  t.eq(json.encode(math.maxinteger), "9223372036854775807", "maxinteger")
  t.eq(json.encode(math.mininteger), "-9223372036854775808", "mininteger")
  t.eq(json.encode(1.0), "1.0", "a float stays a float")
  t.eq(json.decode("1.0"), 1.0, "and decodes as one")
  t.eq(math.type(json.decode("1.0")), "float", "float type")
  t.eq(json.encode({}), "{}", "an unmarked empty table is an object")
  t.eq(json.encode(json.array()), "[]", "json.array() is []")
  t.eq(json.encode({ x = json.array({}) }), '{"x":[]}', "marked empty array inside")
  t.eq(json.encode("é\n\"q\""), '"é\\n\\"q\\""', "strings escaped, UTF-8 kept")
  t.eq(json.encode({ [1] = "a", [3] = "c" }), '{"1":"a","3":"c"}', "a sparse table is an object")
  t.eq(json.encode({ 1, 2, x = 3 }), '{"1":1,"2":2,"x":3}', "mixed keys make an object")
  t.ok(tostring(json.null) == "json.null", "json.null prints as json.null")
end)

t.test("pretty output", function()
  t.eq(json.encode({ a = { 1 } }, { pretty = true }), '{\n  "a": [\n    1\n  ]\n}', "indented")
end)

t.test("errors name what and where", function()
  t.raises(function() json.encode({ a = { b = print } }) end, "function value cannot be encoded at %$?%.a%.b",
    "a function, with its path")
  t.raises(function() json.encode({ x = 0 / 0 }) end, "NaN", "NaN")
  t.raises(function() json.encode({ s = "\255\254" }) end, "not valid UTF%-8", "binary strings")
  local cyc = {}
  cyc.self = cyc
  t.raises(function() json.encode(cyc) end, "nested too deep", "cycles")
  local e = t.raises(function() json.decode('{"a": [1, 2') end, "json.decode", "truncated input")
  t.like(e and e.message, "line 1", "the message says where")
  t.raises(function() json.decode("") end, "json.decode", "empty input")
  t.raises(function() json.encode({ [true] = 1 }) end, "boolean key", "boolean keys")
end)

t.test("base64", function()
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  local bytes = table.concat(all)
  for n = 0, 5 do
    local s = bytes:sub(1, n)
    t.eq(json.base64_decode(json.base64_encode(s)), s, "round trip of " .. n .. " bytes")
  end
  t.eq(json.base64_encode("hello"), "aGVsbG8=", "known value")
  t.eq(json.base64_decode(json.base64_encode(bytes)), bytes, "all byte values")
  local v, err = json.base64_decode("abc")
  t.eq(v, nil, "bad length: nil")
  t.ok(flow.is_error(err, "json.base64"), "and a json.base64 error object")
  t.eq(err and err.message, "invalid base64: length is not a multiple of 4", "bad length")
  v, err = json.base64_decode("aGVs\nbG8=\n")
  t.eq(v, "hello", "line breaks are skipped")
  for _, bad in ipairs { "aGVsbG8", "aG=sbG8=", "aGVsbG8=aGVs", "aGVs!G8=", "====", "a===" } do
    v, err = json.base64_decode(bad)
    t.ok(v == nil and flow.is_error(err, "json.base64"), "refused: " .. bad)
  end
end)

t.test("large documents", function()
  local arr = {}
  for i = 1, 100000 do arr[i] = { id = i, name = "row" .. i } end
  local s = json.encode(arr)
  local back = json.decode(s)
  t.eq(#back, 100000, "100k rows")
  t.eq(back[99999].name, "row99999", "content")
end)

t.done()
