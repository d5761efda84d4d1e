--- agentd for Neovim: run prompts in the project's workspace and stream the reply into a buffer.
---
--- One connection and one subscription per workspace (see `agentd.link`), one
--- current session per workspace, and one run followed at a time. Which events
--- end that run is decided in `run_event`, with agentctl's rules: only our
--- run's `run.complete` ends it, and another run's error never does. How the
--- session buffer looks is `agentd.buffer`'s; permission prompts are
--- `agentd.permissions`'; diff, undo and reloading changed files `agentd.changes`'.
local buffer = require('agentd.buffer')
local changes = require('agentd.changes')
local context = require('agentd.context')
local link = require('agentd.link')
local permissions = require('agentd.permissions')

local M = {}

local config = { socket = nil, model = nil, auto_start = true, agentd_cmd = nil }

local state = {
  current = {}, ---@type table<string, string> project root -> its current session
  roots = {}, ---@type table<string, string> workspace id -> its project root
  workspace_id = nil, -- of the last command that reached a workspace
  session_id = nil,
  root = nil,
  -- {id, state, text, error, messages, message_id, turn, session_id, workspace_id, agent_error, cancel_requested}
  run = nil,
}

local function notify(message, level)
  vim.notify('agentd: ' .. message, level or vim.log.levels.INFO)
end

local error_text = link.error_text

--- 32 hex digits, chosen here so the run's events are ours even if they arrive before agent.send's reply.
local function new_run_id()
  local bytes = vim.uv.random(16)
  return (bytes:gsub('.', function(c)
    return ('%02x'):format(c:byte())
  end))
end

--- The nearest folder upward holding `.git`, from the current buffer's file (else the cwd); else the cwd.
local function project_root()
  local buf = vim.api.nvim_get_current_buf()
  if buffer.root_of(buf) then
    return buffer.root_of(buf)
  end
  local cwd = vim.fn.getcwd()
  local name = vim.api.nvim_buf_get_name(buf)
  local start = cwd
  if name ~= '' and not name:match('^%a[%w+.-]*://') then
    start = vim.fs.dirname(vim.fs.normalize(name))
  end
  local found = vim.fs.find('.git', { upward = true, path = start, limit = 1 })[1]
  return found and vim.fs.dirname(found) or cwd
end

-- The run ----------------------------------------------------------------------

local function is_set(value)
  return value ~= nil and value ~= vim.NIL and value ~= ''
end

--- Text streamed into one of the run's assistant messages. A run that calls
--- tools writes several; offsets count within each, and `run.text` is the
--- latest one's, as `run.complete`'s `text` will be.
local function add_delta(run, payload)
  local text, offset, message_id = payload.text, payload.offset, payload.message_id
  if type(text) ~= 'string' or type(offset) ~= 'number' or type(message_id) ~= 'string' then
    return
  end
  local message = run.messages[message_id]
  if not message then
    message = { text = '', chars = 0 }
    run.messages[message_id] = message
  end
  -- offsets count code points; a delta that overlaps what we have (sent again) adds only its new part.
  if offset < message.chars then
    text = vim.fn.strcharpart(text, message.chars - offset)
  end
  run.message_id = message_id
  if text == '' then
    return
  end
  message.text = message.text .. text
  message.chars = message.chars + vim.fn.strchars(text)
  run.text = message.text
  run.turn:append(message_id, text)
end

--- A message's whole text, as stored: it repairs deltas that were dropped on the way.
local function set_message_text(run, message_id, text)
  run.messages[message_id] = { text = text, chars = vim.fn.strchars(text) }
  if run.message_id == nil or run.message_id == message_id then
    run.message_id = message_id
    run.text = text
  end
  run.turn:set_text(message_id, text)
end

local function finish(run, payload)
  if type(payload.text) == 'string' then
    if is_set(payload.message_id) then
      set_message_text(run, payload.message_id, payload.text)
    end
    run.text = payload.text
  end
  local err = payload.error
  if payload.cancelled == true then
    run.state = 'cancelled'
    run.error = 'run cancelled'
  elseif is_set(err) then
    run.state = 'error'
    run.error = tostring(err)
  elseif run.agent_error then
    run.state = 'error'
    run.error = run.agent_error
  else
    run.state = 'done'
  end
  -- The buffer says how the run ended too, for whoever reads it later.
  run.turn:finish(run.state == 'cancelled' and '[cancelled]' or run.state == 'error' and ('[error: ' .. run.error .. ']') or nil)
  if run.state ~= 'done' then
    notify(run.error, vim.log.levels.WARN)
  end
end

--- An agent.error belongs to us by its run_id when it has one, else by its session:
--- async errors of other runs share the workspace's stream, and must not fail ours.
local function agent_error_is_ours(run, payload)
  local run_id = payload.run_id
  if is_set(run_id) then
    return run_id == run.id
  end
  local session_id = payload.session_id
  return is_set(session_id) and session_id == run.session_id
end

local function run_event(envelope)
  local run = state.run
  local payload = envelope.payload
  if not run or run.state ~= 'running' or type(payload) ~= 'table' then
    return
  end
  if envelope.workspace_id ~= run.workspace_id then
    return
  end
  local kind = envelope.type
  if kind == 'agent.error' then
    -- Not the end: our run's run.complete follows, and says how it ended.
    if agent_error_is_ours(run, payload) then
      run.agent_error = 'agent error: ' .. tostring(payload.message)
    end
    return
  end
  if payload.run_id ~= run.id then
    return
  end
  if kind == 'message.delta' then
    add_delta(run, payload)
  elseif kind == 'message.updated' and payload.role == 'assistant' then
    if type(payload.text) == 'string' and type(payload.id) == 'string' then
      set_message_text(run, payload.id, payload.text)
    end
  elseif kind == 'message.created' and payload.role == 'tool' then
    run.turn:tool_results(payload.parts)
  elseif kind == 'tool.started' then
    run.turn:tool_started(payload)
  elseif kind == 'tool.finished' then
    run.turn:tool_finished(payload)
  elseif kind == 'run.complete' then
    finish(run, payload)
  end
end

--- Files a run (ours or anyone's in a subscribed workspace) changed: their open buffers show it.
local function reload_changed(envelope)
  local payload = envelope.payload
  local root = state.roots[envelope.workspace_id]
  if not root or type(payload) ~= 'table' then
    return
  end
  local kind = envelope.type
  if kind == 'tool.finished' and payload.status == 'ok' and (payload.name == 'write' or payload.name == 'edit') then
    changes.reload(root)
  elseif kind == 'run.complete' and type(payload.changes) == 'number' and payload.changes > 0 then
    local conn = link.conn()
    if conn then
      changes.reload_run(conn, root, payload.run_id)
    end
  end
end

--- Every event, after the run has seen it, also goes to `User AgentdEvent` autocommands
--- (the envelope is their `data`): statuslines and other plugins follow along there.
local function on_event(envelope)
  run_event(envelope)
  permissions.on_event(envelope)
  reload_changed(envelope)
  vim.api.nvim_exec_autocmds('User', { pattern = 'AgentdEvent', modeline = false, data = envelope })
end

--- The connection is gone and the link has stopped seeking it: the run we follow cannot be followed any more.
--- (A drop the link recovers from is not this: it says so itself, and `on_resumed` follows.)
local function on_lost(reason)
  local run = state.run
  if run and run.state == 'running' then
    run.state = 'error'
    run.error = reason
    if run.turn then
      run.turn:finish('[error: ' .. reason .. ']')
    end
    notify(reason, vim.log.levels.WARN)
  end
end

local NOT_FOUND = 2 -- agentd's code for an unknown id

--- agent.send for `run`; a reply lost with the connection is not the run's failure: on_resumed asks how it went.
local function send(conn, run)
  conn:request('agent.send', run.send_args, function(err)
    if err and run.state == 'running' and not link.is_lost(err) then
      run.fail('agent.send: ' .. error_text(err))
    end
  end)
end

--- Back after a drop, subscribed again: the run we follow may have ended meanwhile,
--- and the replay may not hold its run.complete (§9.5), so ask. Asked after subscribing,
--- its end cannot fall between the two; a run.complete seen twice ends it once.
local function on_resumed(conn)
  local run = state.run
  if not run or run.state ~= 'running' or not run.workspace_id then
    return
  end
  conn:request('run.get', { run_id = run.id }, function(err, got)
    if err and err[1] == NOT_FOUND and run.send_args then
      -- agent.send went down with the connection before agentd read it: the same
      -- request again, with the same run_id, starts it once (§9.5).
      send(conn, run)
    elseif got and type(got.complete) == 'table' then
      run_event({ workspace_id = run.workspace_id, type = 'run.complete', payload = got.complete })
    end
  end)
end

-- Workspace and session --------------------------------------------------------

--- `callback(conn, ws)` with the connection and the workspace of `root`; `fail(message)` if either cannot be had.
local function open(root, fail, callback)
  link.with_connection(function(err, conn)
    if err then
      return fail(err)
    end
    link.with_workspace(conn, root, function(werr, ws)
      if werr then
        return fail(werr)
      end
      state.roots[ws.id] = root
      callback(conn, ws)
    end)
  end)
end

local function make_current(root, workspace_id, session_id)
  state.current[root] = session_id
  state.root, state.workspace_id, state.session_id = root, workspace_id, session_id
end

--- `callback(nil, session_id)` with the current session of `root`'s workspace, created if it has none.
local function with_session(conn, ws, root, callback)
  if state.current[root] then
    return callback(nil, state.current[root])
  end
  conn:request('session.create', { workspace_id = ws.id }, function(err, session)
    if err then
      return callback('session.create: ' .. error_text(err))
    end
    callback(nil, session.id)
  end)
end

--- `callback(session_id)` with the session whose last run diff and undo mean: the current
--- one, else (as agentctl) the workspace's most recently updated; nil when it has none.
local function last_run_session(conn, ws, root, fail, callback)
  if state.current[root] then
    return callback(state.current[root])
  end
  conn:request('session.list', { workspace_id = ws.id }, function(err, sessions)
    if err then
      return fail('session.list: ' .. error_text(err))
    end
    local newest = nil
    for _, session in ipairs(sessions) do
      if not newest or session.updated_at > newest.updated_at then
        newest = session
      end
    end
    callback(newest and newest.id or nil)
  end)
end

local function fail_loudly(message)
  notify(message, vim.log.levels.ERROR)
end

-- Commands ---------------------------------------------------------------------

--- Run `prompt` in the current session of the current buffer's project, streaming the reply.
--- With `range` (1-based lines of the current buffer), those lines go with it (`:help agentd-context`).
---@param prompt string
---@param range {first: integer, last: integer}|nil
function M.ask(prompt, range)
  if prompt == nil or prompt == '' then
    return notify('give a prompt: :Agent {prompt}', vim.log.levels.ERROR)
  end
  if state.run and state.run.state == 'running' then
    return notify('a run is still going (' .. state.run.id .. '); :AgentCancel it first', vim.log.levels.ERROR)
  end
  local root = project_root()
  if range then
    prompt = context.attach(prompt, vim.api.nvim_get_current_buf(), range.first, range.last, root)
  end
  local run = { id = new_run_id(), state = 'running', text = '', messages = {}, error = nil }
  state.run = run
  local function fail(message)
    run.state = 'error'
    run.error = message
    if run.turn then
      run.turn:finish('[error: ' .. message .. ']')
    end
    notify(message, vim.log.levels.ERROR)
  end
  open(root, fail, function(conn, ws)
    with_session(conn, ws, root, function(serr, session_id)
      if serr then
        return fail(serr)
      end
      make_current(root, ws.id, session_id)
      run.workspace_id, run.session_id = ws.id, session_id
      local buf = buffer.get(session_id, root)
      run.turn = buffer.begin_turn(buf, prompt)
      buffer.show(buf)
      local args = { workspace_id = ws.id, session_id = session_id, prompt = prompt, run_id = run.id }
      if config.model then
        args.model = config.model
      end
      run.send_args, run.fail = args, fail
      send(conn, run)
    end)
  end)
end

--- Cancel the run `:Agent` started, if it is still going; its run.complete ends it.
function M.cancel()
  local run = state.run
  local conn = link.conn()
  if not run or run.state ~= 'running' or not run.session_id then
    return notify('no run to cancel')
  end
  if not conn then
    return notify('not connected to agentd (reconnecting): cannot cancel the run now', vim.log.levels.WARN)
  end
  run.cancel_requested = true
  conn:request(
    'agent.cancel',
    { workspace_id = run.workspace_id, session_id = run.session_id, run_id = run.id },
    function(err)
      if err then
        notify('agent.cancel: ' .. error_text(err), vim.log.levels.ERROR)
      end
    end
  )
end

--- Whether the run we follow is writing into `session_id`'s buffer now: then it is not refilled under it.
local function run_writes(session_id)
  local run = state.run
  return run ~= nil and run.state == 'running' and run.session_id == session_id
end

--- Make `session` current and show its buffer, filled from what the daemon stored.
local function show_session(conn, ws, root, session_id)
  make_current(root, ws.id, session_id)
  local buf = buffer.get(session_id, root)
  if run_writes(session_id) then
    return buffer.show(buf) -- what it shows is newer than what is stored
  end
  conn:request('session.messages', { workspace_id = ws.id, session_id = session_id }, function(err, messages)
    if err then
      return fail_loudly('session.messages: ' .. error_text(err))
    end
    if not run_writes(session_id) then
      buffer.fill(buf, messages)
    end
    buffer.show(buf)
  end)
end

local function session_label(session)
  local count = session.message_count or 0
  return ('%s  %s  (%d message%s%s)  %s'):format(
    os.date('%Y-%m-%d %H:%M', math.floor(session.updated_at or 0)),
    session.title,
    count,
    count == 1 and '' or 's',
    session.busy and ', running' or '',
    session.id
  )
end

--- Pick one of the workspace's sessions (`vim.ui.select`); it becomes current, and is shown.
function M.sessions()
  local root = project_root()
  open(root, fail_loudly, function(conn, ws)
    conn:request('session.list', { workspace_id = ws.id }, function(err, sessions)
      if err then
        return fail_loudly('session.list: ' .. error_text(err))
      end
      if #sessions == 0 then
        return notify(('no sessions in %s yet; :Agent starts one'):format(root))
      end
      local opts = { prompt = 'agentd session', kind = 'agentd.session', format_item = session_label }
      vim.ui.select(sessions, opts, function(session)
        if session then
          show_session(conn, ws, root, session.id)
        end
      end)
    end)
  end)
end

--- A new session in the current buffer's project; it becomes current, and its (empty) buffer is shown.
function M.new_session()
  local root = project_root()
  open(root, fail_loudly, function(conn, ws)
    conn:request('session.create', { workspace_id = ws.id }, function(err, session)
      if err then
        return fail_loudly('session.create: ' .. error_text(err))
      end
      make_current(root, ws.id, session.id)
      buffer.show(buffer.get(session.id, root))
      notify(('new session %s'):format(session.id))
    end)
  end)
end

--- `act(conn, target, root)` with the target naming the last run of the current buffer's project's session.
local function last_run(command, act)
  local root = project_root()
  open(root, fail_loudly, function(conn, ws)
    last_run_session(conn, ws, root, fail_loudly, function(session_id)
      if not session_id then
        return notify(('no session in %s, so no run to %s'):format(root, command))
      end
      act(conn, { workspace_id = ws.id, session_id = session_id }, root)
    end)
  end)
end

--- Show the changes of the current session's last run in a scratch buffer (filetype `diff`).
function M.diff()
  last_run('diff', changes.diff)
end

--- Put back the files the current session's last run changed; `force` also those changed since.
---@param force boolean|nil
function M.undo(force)
  last_run('undo', function(conn, target, root)
    changes.undo(conn, target, root, force == true)
  end)
end

--- What the plugin knows, for statuslines and tests.
---@return {connected: boolean, workspace_id: string|nil, session_id: string|nil, run: {id: string, state: string, text: string, error: string|nil}|nil}
function M.status()
  local run = state.run
  return {
    connected = link.conn() ~= nil,
    workspace_id = state.workspace_id,
    session_id = state.session_id,
    run = run and { id = run.id, state = run.state, text = run.text, error = run.error } or nil,
  }
end

--- The status, said in a few lines.
function M.show_status()
  local status = M.status()
  local conn = link.conn()
  local lines = {}
  if conn then
    table.insert(lines, 'connected to ' .. conn.path)
  else
    table.insert(lines, 'not connected')
  end
  if status.workspace_id then
    table.insert(lines, ('workspace %s (%s)'):format(status.workspace_id, state.root))
    table.insert(lines, 'session ' .. status.session_id)
  else
    table.insert(lines, 'no workspace yet (:Agent opens the project\'s)')
  end
  local run = status.run
  if run then
    local line = ('run %s %s'):format(run.id, run.state)
    if run.error and run.state ~= 'cancelled' then
      line = line .. ': ' .. run.error
    end
    table.insert(lines, line)
  end
  local asking = permissions.asking()
  if asking then
    table.insert(lines, 'waiting for your answer: ' .. tostring(asking.description))
  end
  notify(table.concat(lines, '\n'))
end

local function configure_link()
  link.configure({
    socket = config.socket,
    auto_start = config.auto_start,
    agentd_cmd = config.agentd_cmd,
    on_event = on_event,
    on_lost = on_lost,
    on_resumed = on_resumed,
  })
end

local option_types = { socket = 'string', model = 'string', auto_start = 'boolean', agentd_cmd = 'table' }

---@param opts {socket: string|nil, model: string|nil, auto_start: boolean|nil, agentd_cmd: string[]|nil}|nil
function M.setup(opts)
  opts = opts or {}
  if type(opts) ~= 'table' then
    error(('agentd.setup: expected a table of options, got %s'):format(type(opts)), 2)
  end
  for key, value in pairs(opts) do
    local expected = option_types[key]
    if not expected then
      local known = vim.tbl_keys(option_types)
      table.sort(known)
      error(('agentd.setup: unknown option %s (known: %s)'):format(vim.inspect(key), table.concat(known, ', ')), 2)
    end
    if type(value) ~= expected then
      error(('agentd.setup: %s must be a %s, not %s'):format(key, expected, vim.inspect(value)), 2)
    end
    if key == 'agentd_cmd' and (#value == 0 or #vim.tbl_filter(function(arg)
      return type(arg) ~= 'string'
    end, value) > 0) then
      error(('agentd.setup: agentd_cmd must be a list of strings, not %s'):format(vim.inspect(value)), 2)
    end
  end
  for key, value in pairs(opts) do
    config[key] = value
  end
  configure_link()
  local command = vim.api.nvim_create_user_command
  command('Agent', function(cmd)
    M.ask(cmd.args, cmd.range > 0 and { first = cmd.line1, last = cmd.line2 } or nil)
  end, {
    nargs = '+',
    range = true,
    desc = 'Run a prompt in agentd (with a range: those lines go with it), streaming the reply into the session buffer',
  })
  command('AgentCancel', M.cancel, { nargs = 0, desc = 'Cancel the run :Agent started' })
  command('AgentSessions', M.sessions, { nargs = 0, desc = "Pick one of the workspace's agentd sessions and show it" })
  command('AgentNew', M.new_session, { nargs = 0, desc = 'Start a new agentd session in the workspace' })
  command('AgentStatus', M.show_status, { nargs = 0, desc = 'Say the connection, workspace, session and run' })
  command('AgentDiff', M.diff, { nargs = 0, desc = "Show the changes of the session's last run" })
  command('AgentUndo', function(cmd)
    M.undo(cmd.bang)
  end, {
    nargs = 0,
    bang = true,
    desc = "Put back the files the session's last run changed (!: also those changed since)",
  })
end

-- Without setup() too: require('agentd').ask() works with the defaults.
configure_link()

return M
