-- flowrun.server.catalogue — the workflows a server offers: the *.lua files of its workflows
-- directory, each loaded as `flowrun run` loads one (engine.load_file, validated), known by the
-- workflow's name. A file edited on disk is loaded again when next looked at (by its size and
-- mtime); a file that no longer loads is reported with its error and keeps its last good
-- version; a name claimed by two files is an error on the second.
--
--   local c = catalogue.new(dir)
--   c:list() -> entries, sorted by name       entry: {name, file, hash, wf, error, doc}
--   c:get(name) -> entry | nil
--   c:fresh(entry) -> wf, source, hash | nil, msg   a new copy loaded from the file (one per run:
--                                                   a run never shares a workflow object)
local sys = require "flow.sys"
local engine = require "flowrun.engine"

local M = {}

local C = {}
C.__index = C

function M.new(dir)
  return setmetatable({ dir = dir, by_file = {}, last_scan = nil }, C)
end

-- load_text(path) -> wf, source, hash | nil, message: the file read once, so the hash recorded
-- with a run is the hash of the code it runs.
local function load_text(path)
  local src = require("flowrun.schedule.workflows").read(path)
  if not src then return nil, "cannot read " .. path end
  local chunk, err = load(src, "@" .. path)
  if not chunk then return nil, err end
  local wf, lerr = engine.load(chunk, path)
  if not wf then return nil, lerr end
  local ok, problems = wf:validate()
  if not ok then return nil, "invalid workflow " .. path .. ": " .. table.concat(problems, "; ") end
  return wf, src, engine.hash_text(src)
end
M.load_text = load_text

function C:scan()
  local names = sys.readdir(self.dir) or {}
  local seen = {}
  for _, n in ipairs(names) do
    if n:match("%.lua$") and n:sub(1, 1) ~= "." then
      local path = self.dir .. "/" .. n
      local st = sys.stat(path)
      if st and st.type == "file" then
        seen[path] = true
        local e = self.by_file[path]
        if not e or e.size ~= st.size or e.mtime ~= st.mtime then
          e = e or { file = path }
          e.size, e.mtime = st.size, st.mtime
          local wf, src, hash = load_text(path)
          if wf then
            e.wf, e.hash, e.error, e.name, e.doc = wf, hash, nil, wf.name, wf.doc
          else
            -- the last good version stays offered
            e.error = tostring(src)
            e.name = e.name or n:gsub("%.lua$", "")
          end
          self.by_file[path] = e
        end
      end
    end
  end
  for path in pairs(self.by_file) do
    if not seen[path] then self.by_file[path] = nil end
  end
end

-- list() -> entries sorted by name (then file); duplicates flagged.
function C:list()
  self:scan()
  local out = {}
  for _, e in pairs(self.by_file) do out[#out + 1] = e end
  table.sort(out, function(a, b)
    if a.name ~= b.name then return a.name < b.name end
    return a.file < b.file
  end)
  local first = {}
  for _, e in ipairs(out) do
    if first[e.name] and e.wf then
      e.duplicate = first[e.name].file
    else
      e.duplicate = nil
      first[e.name] = first[e.name] or e
    end
  end
  return out
end

-- get(name) -> the entry offering workflow `name` (the first file that defines it).
function C:get(name)
  for _, e in ipairs(self:list()) do
    if e.name == name and not e.duplicate then return e end
  end
  return nil
end

-- fresh(entry) -> a workflow object of its own for one run, with its source's hash.
function C:fresh(e)
  return load_text(e.file)
end

return M
