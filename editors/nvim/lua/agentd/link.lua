--- The plugin's link to agentd: its one connection, and the workspaces it has open and subscribed to.
---
--- `init.lua` asks for a connection or a workspace with a callback; everything
--- about reaching the daemon is decided here: finding the socket, starting a
--- daemon when none answers (`agentd.start`), and, when the connection drops,
--- getting it back. Reconnecting retries with a doubling delay for a bounded
--- time, opens every known workspace again and subscribes with `since` the
--- last `seq` seen, so the events missed meanwhile are replayed; then
--- `on_resumed` lets the run being followed ask how it stands (protocol §9.5).
local rpc = require('agentd.rpc')
local start = require('agentd.start')

local M = {}

local uv = vim.uv

--- How a lost connection is sought again: the first retry after `first_ms`, each
--- later one after twice the delay, at most `max_ms`, until `for_ms` have passed.
M.reconnect = { first_ms = 100, max_ms = 2000, for_ms = 60000 }

local handlers = {
  on_event = function(_) end, ---@type fun(envelope: table)
  on_lost = function(_) end, ---@type fun(reason: string) the connection is gone and will not be sought again
  on_resumed = function(_) end, ---@type fun(conn: agentd.Connection) back, every workspace subscribed again
}

local settings = { socket = nil, auto_start = true, agentd_cmd = { 'agentd' } }

---@class agentd.Workspace
---@field root string
---@field id string
---@field session_id string|nil
---@field seq integer|nil the last seq received (an events.gap's excepted): where a resubscription resumes
---@field subscription_id string|nil
---@field subscribed boolean
---@field replaying integer events of the current subscription still to come from its replay

local state = {
  conn = nil, ---@type agentd.Connection|nil
  waiting = nil, ---@type fun(err: string|nil, conn: agentd.Connection|nil)[]|nil callbacks of the connection being made
  workspaces = {}, ---@type table<string, agentd.Workspace> by project root
  by_id = {}, ---@type table<string, agentd.Workspace>
  retry = nil, ---@type {timer: uv.uv_timer_t, delay: integer, deadline: integer, reason: string}|nil while reconnecting
  -- The daemon said it was shutting down (agentctl stop or restart, SIGTERM): it
  -- is someone's to start again, so retries only look for it.
  shutdown_seen = false,
}

local function notify(message)
  -- Low-key on purpose: one line when the connection goes, one when it is back.
  vim.notify('agentd: ' .. message, vim.log.levels.INFO)
end

local function error_text(err)
  if type(err) == 'table' then
    return tostring(err[2] or vim.inspect(err))
  end
  return tostring(err)
end
M.error_text = error_text

--- Whether a request's error is the connection failing, not agentd's answer.
function M.is_lost(err)
  return type(err) == 'table' and err[1] == rpc.LOST
end

---@param opts {socket: string|nil, auto_start: boolean|nil, agentd_cmd: string[]|nil, on_event: fun(envelope: table), on_lost: fun(reason: string), on_resumed: fun(conn: agentd.Connection)|nil}
function M.configure(opts)
  settings.socket = opts.socket
  if opts.auto_start ~= nil then
    settings.auto_start = opts.auto_start
  end
  if opts.agentd_cmd ~= nil then
    settings.agentd_cmd = opts.agentd_cmd
  end
  handlers.on_event = opts.on_event
  handlers.on_lost = opts.on_lost
  handlers.on_resumed = opts.on_resumed or function(_) end
end

--- The open connection, or nil.
---@return agentd.Connection|nil
function M.conn()
  local conn = state.conn
  return conn and conn.connected and conn or nil
end

-- Events -----------------------------------------------------------------------

local function on_event(envelope)
  local ws = state.by_id[envelope.workspace_id]
  if ws and ws.subscribed and envelope.subscription_id == ws.subscription_id then
    if envelope.type ~= 'events.gap' and type(envelope.seq) == 'number' then
      -- max: a pending permission.request comes after the replay with its older seq.
      ws.seq = math.max(ws.seq or 0, envelope.seq)
    end
    local replayed = ws.replaying > 0
    if replayed then
      ws.replaying = ws.replaying - 1
    elseif envelope.type == 'workspace.closed' then
      -- The subscription ended. At a shutdown the connection follows it; otherwise
      -- the workspace is opened and subscribed again when it is next needed.
      local payload = type(envelope.payload) == 'table' and envelope.payload or {}
      if payload.reason == 'shutdown' then
        state.shutdown_seen = true
      else
        ws.subscribed = false
      end
    end
  end
  handlers.on_event(envelope)
end

--- Open `ws.root` and subscribe to it, with `since` when it was subscribed before.
---@param conn agentd.Connection
---@param ws agentd.Workspace
---@param callback fun(err: string|nil)
local function subscribe(conn, ws, callback)
  conn:request('workspace.open', { path = ws.root }, function(err, opened)
    if err then
      return callback('workspace.open: ' .. error_text(err))
    end
    local args = { workspace_id = opened.id, since = ws.seq }
    conn:request('events.subscribe', args, function(serr, sub)
      if serr then
        return callback('events.subscribe: ' .. error_text(serr))
      end
      ws.id, ws.subscription_id, ws.subscribed = opened.id, sub.subscription_id, true
      ws.replaying = sub.replayed or 0
      -- The first time, nothing before the subscription is ours to see; after that
      -- seq moves only with the events, so a replay cut short resumes where it was.
      ws.seq = ws.seq or sub.seq
      state.by_id[ws.id] = ws
      callback(nil)
    end)
  end)
end

-- The connection ---------------------------------------------------------------

local lost

local function stop_retry()
  local retry = state.retry
  state.retry = nil
  if retry then
    retry.timer:stop()
    retry.timer:close()
  end
end

--- Connect once to `path`; `callback(err, conn, nobody)`.
local function connect(path, callback)
  local conn
  conn = rpc.connect(path, {
    on_event = on_event,
    on_close = function(reason)
      if state.conn == conn then
        lost(reason)
      end
    end,
  }, function(err, nobody)
    callback(err, not err and conn or nil, nobody)
  end)
end

--- Every known workspace subscribed again on `conn`; one that cannot be is left for its next use.
local function resubscribe(conn, callback)
  local left = 1
  local function one_done()
    left = left - 1
    if left == 0 then
      callback()
    end
  end
  for _, ws in pairs(state.workspaces) do
    left = left + 1
    ws.subscribed = false
    subscribe(conn, ws, one_done)
  end
  one_done()
end

local schedule_retry

--- The connection attempt settled: hand it to whoever waits, or keep trying.
local function settle(err, conn)
  local waiting = state.waiting or {}
  state.waiting = nil
  local resumed = state.retry ~= nil
  if conn then
    state.conn = conn
    state.shutdown_seen = false
    stop_retry()
    if resumed then
      notify('reconnected')
      handlers.on_resumed(conn)
    end
  end
  for _, cb in ipairs(waiting) do
    cb(err, conn)
  end
  if err and state.retry then
    schedule_retry(err)
  end
end

--- Make the connection: connect, else start a daemon when nobody listens (and
--- that is allowed), connect again; then subscribe the known workspaces again.
---@param by_command boolean a command needs the daemon now: start it even after a shutdown
local function establish(by_command)
  local path = rpc.socket_path(settings.socket)
  local function connected(err, conn)
    if err then
      return settle(err)
    end
    resubscribe(conn, function()
      if not conn.connected then
        return settle('the connection to agentd closed again at once')
      end
      settle(nil, conn)
    end)
  end
  connect(path, function(err, conn, nobody)
    local may_start = settings.auto_start and (by_command or not state.shutdown_seen)
    if not (err and nobody and may_start) then
      return connected(err, conn)
    end
    start.start(path, settings.agentd_cmd, function(serr)
      if serr then
        return settle(serr)
      end
      connect(path, connected)
    end)
  end)
end

local function attempt()
  if state.waiting or not state.retry then
    return -- a command's attempt is under way, or retrying was stopped
  end
  state.waiting = {}
  establish(false)
end

---@param err string why the last attempt failed
schedule_retry = function(err)
  local retry = state.retry
  if not retry then
    return
  end
  if uv.now() >= retry.deadline then
    stop_retry()
    notify(('could not reconnect within %gs (%s); the next command tries again'):format(
      M.reconnect.for_ms / 1000,
      err
    ))
    return handlers.on_lost(retry.reason .. '; could not reconnect: ' .. err)
  end
  retry.timer:start(retry.delay, 0, vim.schedule_wrap(attempt))
  retry.delay = math.min(retry.delay * 2, M.reconnect.max_ms)
end

--- The open connection dropped: seek it again while there are workspaces to resume.
---@param reason string
lost = function(reason)
  state.conn = nil
  for _, ws in pairs(state.workspaces) do
    ws.subscribed = false
  end
  if next(state.workspaces) == nil then
    return handlers.on_lost(reason)
  end
  notify(reason .. '; reconnecting')
  state.retry = {
    timer = assert(uv.new_timer()),
    delay = M.reconnect.first_ms,
    deadline = uv.now() + M.reconnect.for_ms,
    reason = reason,
  }
  schedule_retry(reason)
end

--- `callback(err, conn)` with the connection, made first if there is none.
---@param callback fun(err: string|nil, conn: agentd.Connection|nil)
function M.with_connection(callback)
  if state.conn and state.conn.connected then
    return callback(nil, state.conn)
  end
  if state.waiting then
    table.insert(state.waiting, callback)
    return
  end
  if state.retry then
    state.retry.timer:stop() -- a command does not wait for the next retry
  end
  state.waiting = { callback }
  establish(true)
end

--- Whether the link is seeking a connection it lost.
function M.reconnecting()
  return state.retry ~= nil
end

--- Close the connection and stop seeking it; a run being followed is lost with it.
function M.disconnect()
  stop_retry()
  local conn = state.conn
  state.conn = nil
  if conn then
    conn:close()
  end
  for _, ws in pairs(state.workspaces) do
    ws.subscribed = false
  end
  handlers.on_lost('disconnected from agentd')
end

--- `callback(err, ws)` with the workspace of `root`, opened and subscribed to before anything is sent in it.
---@param conn agentd.Connection
---@param root string
---@param callback fun(err: string|nil, ws: agentd.Workspace|nil)
function M.with_workspace(conn, root, callback)
  local ws = state.workspaces[root]
  if ws and ws.subscribed then
    return callback(nil, ws)
  end
  ws = ws or { root = root, subscribed = false, replaying = 0 }
  subscribe(conn, ws, function(err)
    if err then
      return callback(err)
    end
    state.workspaces[root] = ws
    callback(nil, ws)
  end)
end

return M
