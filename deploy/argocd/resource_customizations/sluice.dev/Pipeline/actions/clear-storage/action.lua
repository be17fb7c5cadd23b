-- Stop and clear in one step: desiredState Stopped plus a new, unique actionClearRequest.
-- The operator stops the pipeline, waits until it is fully stopped, then clears.
-- Not spec.storage.clearRequest: that field is git's. Argo CD's diff leaves a field that git
-- does not set alone, so selfHeal never puts an older value back over this one (which
-- would be refused, or count as a second request); the operator records it apart.
local os = require("os")

if obj.spec.storage == nil then
  obj.spec.storage = {}
end
local used = {}
if obj.spec.storage.actionClearRequest ~= nil then
  used[obj.spec.storage.actionClearRequest] = true
end
if obj.status ~= nil and obj.status.storage ~= nil then
  local storage = obj.status.storage
  if storage.lastActionClearRequest ~= nil then
    used[storage.lastActionClearRequest] = true
  end
  if storage.clearingActionRequest ~= nil then
    used[storage.clearingActionRequest] = true
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
obj.spec.storage.actionClearRequest = request
return obj
