-- Stop and clear in one step: desiredState Stopped plus a new, unique clearRequest.
-- The operator stops the pipeline, waits until it is fully stopped, then clears.
local os = require("os")

if obj.spec.storage == nil then
  obj.spec.storage = {}
end
local used = {}
if obj.spec.storage.clearRequest ~= nil then
  used[obj.spec.storage.clearRequest] = true
end
if obj.status ~= nil and obj.status.storage ~= nil then
  local storage = obj.status.storage
  if storage.lastClearRequest ~= nil then
    used[storage.lastClearRequest] = true
  end
  if storage.clearingRequest ~= nil then
    used[storage.clearingRequest] = true
  end
end

local base = os.date("!%Y-%m-%dT%H:%M:%SZ")
local request = base
local n = 1
while used[request] do
  n = n + 1
  request = base .. "-" .. tostring(n)
end

obj.spec.desiredState = "Stopped"
obj.spec.storage.clearRequest = request
return obj
