--- One connection to agentd: msgpack-RPC over its Unix socket, on the event loop.
---
--- Neovim's own `sockconnect(..., {rpc = true})` cannot hand agentd's `event`
--- notifications to Lua, so this speaks the protocol itself over a `vim.uv`
--- pipe: requests carry a callback keyed by msgid, and `event` notifications go
--- to one handler. Nothing here blocks the editor; every callback runs in the
--- main loop (`vim.schedule`), where the API may be called.
local M = {}

local uv = vim.uv
local bit = require('bit') -- LuaJIT's, or the one Neovim bundles for PUC Lua

--- Where the daemon listens, found as agentd and agentctl find it:
--- an explicit path, else `$AGENTD_SOCKET`, else `$XDG_RUNTIME_DIR/agentd/agentd.sock`,
--- else `/tmp/agentd-$UID/agentd.sock`.
---@param explicit string|nil
---@return string
function M.socket_path(explicit)
  if explicit and explicit ~= '' then
    return explicit
  end
  local env = vim.env.AGENTD_SOCKET
  if env and env ~= '' then
    return env
  end
  local runtime = vim.env.XDG_RUNTIME_DIR
  if runtime and runtime ~= '' then
    return runtime .. '/agentd/agentd.sock'
  end
  return ('/tmp/agentd-%d/agentd.sock'):format(uv.getuid())
end

local S_IWOTH, S_ISVTX = 2, 512 -- 0o002, 0o1000

--- Why the socket at `path` is not the user's own agentd's, or nil when it may be.
---
--- Checked before a byte is sent, as agentctl does: a socket in a folder others
--- can write to could have been swapped for someone else's. (The peer's uid,
--- SO_PEERCRED, is out of luv's reach; the owner checks below are what it has.)
---@param path string
---@return string|nil
function M.socket_problem(path)
  local uid = uv.getuid()
  local dir = vim.fs.dirname(path)
  local dstat = uv.fs_lstat(dir)
  if not dstat then
    return nil -- nothing there yet: connecting will say so
  end
  if dstat.type == 'link' then
    return ('%s is a symlink; agentd\'s folders must be real directories'):format(dir)
  end
  local dmode = dstat.mode % 4096
  if dstat.uid ~= uid and dstat.uid ~= 0 then
    return ('%s is owned by uid %d (mode %o), not by this user'):format(dir, dstat.uid, dmode)
  end
  if bit.band(dmode, S_IWOTH) ~= 0 and bit.band(dmode, S_ISVTX) == 0 then
    return ('%s may be written by others (uid %d, mode %o)'):format(dir, dstat.uid, dmode)
  end
  local sstat = uv.fs_lstat(path)
  if sstat and sstat.uid ~= uid then
    return ('%s is owned by uid %d (mode %o), not by this user'):format(path, sstat.uid, sstat.mode % 4096)
  end
  return nil
end

---@class agentd.Connection
---@field path string
---@field connected boolean
---@field private pipe uv.uv_pipe_t
---@field private next_id integer
---@field private pending table<integer, fun(err: any, result: any)>
---@field private on_event fun(envelope: table)
---@field private on_close fun(reason: string)
local Connection = {}
Connection.__index = Connection

local MAX_MSGID = 4294967295

--- The error code of a request the connection failed: `[LOST, reason]`. Not one of
--- agentd's codes (those are >= 0): the request may or may not have reached it.
M.LOST = -1

--- Connect to `path`; `on_connect(err, nobody)` is called once, with nil on success.
--- `nobody` is true when nothing listens there (no socket file, or a stale one):
--- the case in which starting a daemon can help.
---@param path string
---@param handlers {on_event: fun(envelope: table), on_close: fun(reason: string)|nil}
---@param on_connect fun(err: string|nil, nobody: boolean|nil)
---@return agentd.Connection
function M.connect(path, handlers, on_connect)
  local self = setmetatable({
    path = path,
    connected = false,
    pipe = nil,
    next_id = 0,
    pending = {},
    on_event = handlers.on_event,
    on_close = handlers.on_close or function() end,
    closed = false,
  }, Connection)
  local problem = M.socket_problem(path)
  if problem then
    self.closed = true
    vim.schedule(function()
      on_connect(problem)
    end)
    return self
  end
  self.pipe = assert(uv.new_pipe(false))
  self.pipe:connect(path, function(err)
    if err then
      local nobody = vim.startswith(err, 'ENOENT') or vim.startswith(err, 'ECONNREFUSED')
      self:_close(('cannot connect to agentd at %s: %s'):format(path, err), true)
      vim.schedule(function()
        on_connect(('cannot connect to agentd at %s: %s'):format(path, err), nobody)
      end)
      return
    end
    self.connected = true
    self:_read()
    vim.schedule(function()
      on_connect(nil)
    end)
  end)
  return self
end

function Connection:_read()
  -- A streaming decoder: a message split across reads is held until its last byte arrives.
  local unpack = vim.mpack.Unpacker()
  self.pipe:read_start(function(err, data)
    if err or not data then
      self:_close(err and ('connection to agentd lost: ' .. err) or 'agentd closed the connection')
      return
    end
    local pos = 1
    while pos <= #data do
      local ok, message, nextpos = pcall(unpack, data, pos)
      if not ok then
        self:_close('agentd sent something that is not msgpack: ' .. tostring(message))
        return
      end
      pos = nextpos
      if message == nil then
        break -- the rest of this message is still on its way
      end
      self:_dispatch(message)
    end
  end)
end

function Connection:_dispatch(message)
  if type(message) ~= 'table' then
    return
  end
  local kind = message[1]
  if kind == 1 then
    local callback = self.pending[message[2]]
    if callback then
      self.pending[message[2]] = nil
      local err, result = message[3], message[4]
      if err == vim.NIL then
        err = nil
      end
      vim.schedule(function()
        callback(err, result)
      end)
    end
  elseif kind == 2 and message[2] == 'event' then
    local params = message[3]
    local envelope = type(params) == 'table' and params[1] or nil
    if type(envelope) == 'table' then
      vim.schedule(function()
        self.on_event(envelope)
      end)
    end
  end
end

--- Send `method` with named `args` (nil for none); `callback(err, result)`
--- gets `err` as agentd's `[code, message]`, or nil on success.
---@param method string
---@param args table|nil
---@param callback fun(err: any, result: any)|nil
function Connection:request(method, args, callback)
  callback = callback or function() end
  if not self.connected then
    vim.schedule(function()
      callback({ M.LOST, 'not connected to agentd' }, nil)
    end)
    return
  end
  self.next_id = (self.next_id + 1) % (MAX_MSGID + 1)
  local id = self.next_id
  self.pending[id] = callback
  -- params is [] or [{named args}]; an empty Lua table encodes as an empty array.
  local params = args and { args } or {}
  self.pipe:write(vim.mpack.encode({ 0, id, method, params }))
end

function Connection:_close(reason, quiet)
  if self.closed then
    return
  end
  self.closed = true
  self.connected = false
  if self.pipe and not self.pipe:is_closing() then
    self.pipe:close()
  end
  local pending = self.pending
  self.pending = {}
  if quiet then
    return
  end
  vim.schedule(function()
    for _, callback in pairs(pending) do
      callback({ M.LOST, reason }, nil)
    end
    self.on_close(reason)
  end)
end

--- Close the connection; requests still unanswered get an error.
function Connection:close()
  self:_close('closed by the editor')
end

return M
