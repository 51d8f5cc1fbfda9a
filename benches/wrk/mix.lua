-- "mix" load: cycle over every post path, in file order.
--
--   wrk -tT ... -s benches/wrk/mix.lua http://127.0.0.1:PORT/ -- PATHS_FILE [T]
--
-- PATHS_FILE holds one path per line ("/some-slug/"). Each wrk thread walks
-- the whole list from its own starting offset (with T given, thread n starts
-- n/T of the way in), so the order is deterministic and threads do not move
-- in lock-step on the same URL. Headers given with -H (Host, Accept-Encoding)
-- are part of every request.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")

local counter = 0

-- Runs in wrk's main Lua state, once per thread, before that thread's init().
function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
end

function init(args)
   local file = args[1]
   if not file then
      error("mix.lua: pass the paths file after --")
   end
   local paths = {}
   for line in io.lines(file) do
      if line:match("^/") then
         table.insert(paths, line)
      end
   end
   if #paths == 0 then
      error("mix.lua: no paths in " .. file)
   end
   requests = {}
   for i, path in ipairs(paths) do
      requests[i] = wrk.format("GET", path)
   end
   local nthreads = math.max(tonumber(args[2] or "1") or 1, 1)
   index = (math.floor((id or 0) * #requests / nthreads) % #requests) + 1
end

function request()
   local req = requests[index]
   index = index + 1
   if index > #requests then
      index = 1
   end
   return req
end

done = report.done
