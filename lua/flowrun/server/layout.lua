-- flowrun.server.layout — a workflow's DAG laid out by Graphviz: the dot text flowrun already
-- emits (flowrun.engine.graph) is given to `dot -Tplain` (through flow.exec: the loop never
-- blocks), and its positions are returned as plain data. The page draws the boxes and the
-- splines with the DOM API and colours them by state, so the layout is Graphviz's while no
-- markup made from a run's values is ever parsed by the browser.
--
--   layout.of(wf) -> {width, height, nodes = {{name, x, y, w, h, cleanup}}, edges = {{from, to,
--                    points = {{x, y}...} (a B-spline: p0, then three points per segment),
--                    dashed}}} | nil, err     (points, y downwards, origin top left)
-- Results are cached by the dot text (a workflow edited on disk is laid out again).
local flow = require "flow"
local graph = require "flowrun.engine.graph"

local M = {}

M.DOT = "dot"
M.POINTS = 72 -- Graphviz's plain output is in inches

local cache, cache_n = {}, 0

-- Splits a line of -Tplain output into words; "quoted strings" (names dot had to quote) as one.
local function words(line)
  local out, i, n = {}, 1, #line
  while i <= n do
    local c = line:sub(i, i)
    if c == " " then
      i = i + 1
    elseif c == '"' then
      local buf, j = {}, i + 1
      while j <= n do
        local d = line:sub(j, j)
        if d == "\\" and j < n then
          buf[#buf + 1] = line:sub(j + 1, j + 1)
          j = j + 2
        elseif d == '"' then
          break
        else
          buf[#buf + 1] = d
          j = j + 1
        end
      end
      out[#out + 1] = table.concat(buf)
      i = j + 1
    else
      local j = line:find(" ", i, true) or (n + 1)
      out[#out + 1] = line:sub(i, j - 1)
      i = j
    end
  end
  return out
end

-- parse(text) -> layout (see above). Exposed for tests.
function M.parse(text, cleanup_of)
  local P = M.POINTS
  local out = { nodes = {}, edges = {} }
  local height
  for line in text:gmatch("[^\n]+") do
    local w = words(line)
    if w[1] == "graph" then
      out.width, height = tonumber(w[3]) * P, tonumber(w[4]) * P
      out.height = height
    elseif w[1] == "node" then
      local name = w[2]
      out.nodes[#out.nodes + 1] = { name = name, x = tonumber(w[3]) * P,
        y = height - tonumber(w[4]) * P, w = tonumber(w[5]) * P, h = tonumber(w[6]) * P,
        cleanup = cleanup_of and cleanup_of[name] or nil }
    elseif w[1] == "edge" then
      local n = tonumber(w[4])
      local pts = {}
      for i = 0, n - 1 do
        pts[#pts + 1] = { tonumber(w[5 + 2 * i]) * P, height - tonumber(w[6 + 2 * i]) * P }
      end
      local style = w[#w - 1] -- the last two words are the style and the colour
      out.edges[#out.edges + 1] = { from = w[2], to = w[3], points = pts,
        dashed = style == "dashed" or nil }
    end
  end
  if not out.width then return nil, "dot gave no graph" end
  return out
end

-- of(wf) -> layout, or nil and an error message.
function M.of(wf)
  local text = graph.dot(wf)
  local hit = cache[text]
  if hit then return hit end
  local ok, r = pcall(flow.exec, { M.DOT, "-Tplain" }, { stdin = text, timeout = 20 })
  if not ok then
    return nil, "cannot run Graphviz (" .. M.DOT .. "): " .. tostring(type(r) == "table" and r.message or r)
  end
  if r.status ~= 0 then
    return nil, "Graphviz failed: " .. tostring(r.stderr):sub(1, 300)
  end
  local cleanup = {}
  for _, t in ipairs(wf.order) do if t.cleanup then cleanup[t.name] = true end end
  local lay, err = M.parse(r.stdout, cleanup)
  if not lay then return nil, err end
  for _, n in ipairs(lay.nodes) do
    local t = wf.by_name[n.name]
    n.trigger = t and t.trigger ~= "all_success" and t.trigger or nil
  end
  cache_n = cache_n + 1
  if cache_n > 64 then cache, cache_n = {}, 1 end
  cache[text] = lay
  return lay
end

return M
