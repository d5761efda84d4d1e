--- The plugin's link to agentd: its one connection, and the workspaces it has open and subscribed to.
---
--- `init.lua` asks for a connection or a workspace with a callback; everything
--- about reaching the daemon (finding the socket, connecting, what happens when
--- the connection drops) is decided here.
local rpc = require('agentd.rpc')

local M = {}

local handlers = {
  on_event = function(_) end, ---@type fun(envelope: table)
  on_lost = function(_) end, ---@type fun(reason: string)
}

local settings = { socket = nil, auto_start = true }

local state = {
  conn = nil, ---@type agentd.Connection|nil
  connecting = nil, ---@type fun(err: string|nil, conn: agentd.Connection|nil)[]|nil callbacks waiting for the connection
  workspaces = {}, ---@type table<string, {id: string, session_id: string|nil}> by project root
}

local function error_text(err)
  if type(err) == 'table' then
    return tostring(err[2] or vim.inspect(err))
  end
  return tostring(err)
end
M.error_text = error_text

---@param opts {socket: string|nil, auto_start: boolean|nil, on_event: fun(envelope: table), on_lost: fun(reason: string)}
function M.configure(opts)
  settings.socket = opts.socket
  if opts.auto_start ~= nil then
    settings.auto_start = opts.auto_start
  end
  handlers.on_event = opts.on_event
  handlers.on_lost = opts.on_lost
end

--- The open connection, or nil.
---@return agentd.Connection|nil
function M.conn()
  local conn = state.conn
  return conn and conn.connected and conn or nil
end

local function on_close(reason)
  state.conn = nil
  state.workspaces = {}
  handlers.on_lost(reason)
end

--- `callback(err, conn)` with the connection, made first if there is none.
---@param callback fun(err: string|nil, conn: agentd.Connection|nil)
function M.with_connection(callback)
  if state.conn and state.conn.connected then
    return callback(nil, state.conn)
  end
  if state.connecting then
    table.insert(state.connecting, callback)
    return
  end
  state.connecting = { callback }
  local conn
  conn = rpc.connect(rpc.socket_path(settings.socket), {
    on_event = function(envelope)
      handlers.on_event(envelope)
    end,
    on_close = on_close,
  }, function(err)
    local waiting = state.connecting or {}
    state.connecting = nil
    if not err then
      state.conn = conn
    end
    for _, cb in ipairs(waiting) do
      cb(err, not err and conn or nil)
    end
  end)
end

--- `callback(err, ws)` with the workspace of `root`, opened and subscribed to before anything is sent in it.
---@param conn agentd.Connection
---@param root string
---@param callback fun(err: string|nil, ws: {id: string, session_id: string|nil}|nil)
function M.with_workspace(conn, root, callback)
  local known = state.workspaces[root]
  if known then
    return callback(nil, known)
  end
  conn:request('workspace.open', { path = root }, function(err, ws)
    if err then
      return callback('workspace.open: ' .. error_text(err))
    end
    conn:request('events.subscribe', { workspace_id = ws.id }, function(serr)
      if serr then
        return callback('events.subscribe: ' .. error_text(serr))
      end
      known = { id = ws.id, session_id = nil }
      state.workspaces[root] = known
      callback(nil, known)
    end)
  end)
end

return M
