-- Argo CD health check for sluice.dev/Pipeline.
-- Runs in Argo CD's Lua sandbox (gopher-lua, Lua 5.1): base and table libraries only, so
-- no string.* or math.* here.
local hs = {}

local function progressing(message)
  hs.status = "Progressing"
  hs.message = message
  return hs
end

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function claims(storage)
  if storage.claims == nil or #storage.claims == 0 then
    return "no claims"
  end
  return "claims " .. table.concat(storage.claims, ", ")
end

-- Where data outlived the last clear by policy (a Retain volume, a detached claim).
local function retained(storage)
  if storage.retainedVolumes == nil or #storage.retainedVolumes == 0 then
    return ""
  end
  local parts = {}
  for _, v in ipairs(storage.retainedVolumes) do
    local where = "claim " .. tostring(v.claim)
    if v.persistentVolume ~= nil then
      where = "PersistentVolume " .. tostring(v.persistentVolume) .. " (" .. where .. ")"
    end
    table.insert(parts, where)
  end
  return " Data of the last clear remains in " .. table.concat(parts, ", ") .. "."
end

-- The safety net (spec.storage.snapshotBeforeClear): the snapshots this clear still waits
-- for (taken of its claims, not yet readyToUse); nil when there are none.
local function pendingSnapshots(storage)
  if storage.snapshots == nil then
    return nil
  end
  local names = {}
  for _, s in ipairs(storage.snapshots) do
    if s.readyToUse ~= true and (s.clearRequest == storage.clearingRequest
      or s.clearRequest == storage.clearingActionRequest) then
      table.insert(names, tostring(s.name))
    end
  end
  if #names == 0 then
    return nil
  end
  return table.concat(names, ", ")
end

-- What a clear can be undone from, and what the claim was restored from.
local function snapshots(storage)
  local out = ""
  if storage.restoredFrom ~= nil then
    out = " Restored from VolumeSnapshot " .. tostring(storage.restoredFrom) .. "."
  end
  if storage.snapshots ~= nil and #storage.snapshots > 0 then
    local parts = {}
    for _, s in ipairs(storage.snapshots) do
      table.insert(parts, tostring(s.name) .. " (until " .. tostring(s.expiresAt or "?") .. ")")
    end
    out = out .. " Snapshots kept: " .. table.concat(parts, ", ") .. "."
  end
  return out
end

local spec = obj.spec or {}
local storageSpec = spec.storage or {}
local desired = spec.desiredState or "Running"
local status = obj.status

if status == nil then
  return progressing("Waiting for the Sluice operator to report status.")
end

local storage = status.storage or {}
local err = status.error
local clearing = storage.status == "Clearing"
local request = storageSpec.clearRequest
if request == nil or request == "" or request == storage.lastClearRequest then
  -- Not git's (or kubectl's) request: the one Argo CD's clear-storage action made, if any.
  request = storageSpec.actionClearRequest
  if request == "" or request == storage.lastActionClearRequest then
    request = nil
  end
end
local pending = request ~= nil and not clearing
-- The clear in progress, by the request it handles.
local clearingName = storage.clearingRequest or storage.clearingActionRequest

-- A restore waiting for its snapshot to become ready (no error from the snapshot
-- controller) resolves itself: the claim is created once the snapshot is ready.
if err ~= nil and err.error_code == "RestoreSnapshotNotReady"
  and (err.details == nil or err.details.snapshot_error == nil) then
  return progressing(tostring(err.error_code) .. ": " .. tostring(err.message))
end

-- An error that needs a person. CannotStartWhileClearingStorage resolves itself: the
-- pipeline starts once the clear it waits for is done.
if err ~= nil and err.error_code ~= "CannotStartWhileClearingStorage" then
  hs.status = "Degraded"
  hs.message = tostring(err.error_code) .. ": " .. tostring(err.message)
  if err.error_code == "RestoreSnapshotNotFound" or err.error_code == "RestoreSnapshotNotReady" then
    -- spec.storage.restoreFrom: the message names the snapshot; where the others are.
    hs.message = hs.message .. " The pipeline's snapshots: kubectl sluice snapshots "
      .. tostring(obj.metadata.name) .. " -n " .. tostring(obj.metadata.namespace) .. "."
  else
    hs.message = hs.message .. " See status.error.details and the Pipeline's Warning events."
  end
  return hs
end

local generation = obj.metadata.generation
if status.observedGeneration == nil or status.observedGeneration < generation then
  return progressing("Waiting for the operator to act on generation " .. tostring(generation)
    .. " (observed " .. tostring(status.observedGeneration or "none") .. ").")
end

if status.deploymentStatus == "Failed" then
  hs.status = "Degraded"
  -- The Running condition quotes the pod's own reason when there is one.
  local running = condition(status, "Running")
  hs.message = "The pipeline's pod failed (deploymentStatus Failed); see the pod's status"
    .. " and events."
  if running ~= nil and running.message ~= nil and running.message ~= "" then
    hs.message = running.message .. " See the pod's status and events."
  end
  return hs
end

if obj.metadata.deletionTimestamp ~= nil then
  return progressing("Deleting: the operator stops the pipeline and clears its storage ("
    .. claims(storage) .. ") before the Pipeline goes away.")
end

if clearing then
  local message = "Clearing storage (" .. tostring(clearingName or "deletion")
    .. "): " .. claims(storage) .. " being deleted or detached."
  local waiting = pendingSnapshots(storage)
  if waiting ~= nil then
    -- Nothing is deleted before each claim has a ready snapshot.
    message = "Clearing storage (" .. tostring(clearingName or "deletion")
      .. "): waiting for snapshots " .. waiting .. " to be ready; " .. claims(storage)
      .. " are deleted or detached after that (spec.storage.snapshotBeforeClear)."
  end
  if err ~= nil then
    message = message .. " " .. tostring(err.message)
  end
  return progressing(message)
end

if pending then
  local message = "Clear requested (" .. tostring(request)
    .. "); waiting for the pipeline to stop (deploymentStatus "
    .. tostring(status.deploymentStatus) .. ")."
  if err ~= nil then
    message = message .. " " .. tostring(err.message)
  end
  return progressing(message)
end

if status.deploymentStatus == "Provisioning" then
  return progressing("Provisioning: waiting for storage and a ready pod.")
end

if status.deploymentStatus == "Stopping" then
  return progressing("Stopping: waiting for the pipeline's pod to terminate.")
end

local ready = condition(status, "Ready")
local settled = ready == nil or ready.status == "True"

if desired == "Running" and status.deploymentStatus == "Running" and settled then
  hs.status = "Healthy"
  hs.message = "Running as desired; storage " .. tostring(storage.status) .. " ("
    .. claims(storage) .. ")." .. retained(storage) .. snapshots(storage)
  return hs
end

if desired == "Stopped" and status.deploymentStatus == "Stopped" and settled then
  hs.status = "Suspended"
  hs.message = "Stopped as desired; storage " .. tostring(storage.status) .. " ("
    .. claims(storage) .. ")." .. retained(storage) .. snapshots(storage)
  return hs
end

if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  return progressing(ready.message)
end
return progressing("Pipeline is " .. tostring(status.deploymentStatus) .. "; desired "
  .. desired .. ".")
