-- Argo CD resource actions for sluice.dev/Pipeline (Lua 5.1, Argo CD's sandbox).
local actions = {}

local spec = obj.spec or {}
local storageSpec = spec.storage or {}
local status = obj.status or {}
local storage = status.storage or {}
local desired = spec.desiredState or "Running"
local deleting = obj.metadata.deletionTimestamp ~= nil

local request = storageSpec.clearRequest
local actionRequest = storageSpec.actionClearRequest
local clearPending = (request ~= nil and request ~= "" and request ~= storage.lastClearRequest)
  or (actionRequest ~= nil and actionRequest ~= "" and actionRequest ~= storage.lastActionClearRequest)
local clearing = storage.status == "Clearing"
local nothingToClear = storage.status == "Cleared" and desired == "Stopped"

actions["clear-storage"] = {
  ["disabled"] = deleting or clearing or clearPending or nothingToClear,
  ["displayName"] = "Stop and clear storage",
  ["iconClass"] = "fa fa-fw fa-eraser",
}
actions["stop"] = {
  ["disabled"] = deleting or desired == "Stopped",
  ["displayName"] = "Stop",
  ["iconClass"] = "fa fa-fw fa-stop",
}
actions["start"] = {
  ["disabled"] = deleting or desired == "Running",
  ["displayName"] = "Start",
  ["iconClass"] = "fa fa-fw fa-play",
}
return actions
