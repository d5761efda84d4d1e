--- agentd for Neovim: run prompts in the project's workspace and stream the reply into a buffer.
---
--- One connection and one subscription per workspace (see `agentd.link`), one
--- current session per workspace, and one run followed at a time. Which events
--- end that run is decided in `run_event`, with agentctl's rules: only our
--- run's `run.complete` ends it, and another run's error never does.
local link = require('agentd.link')

local M = {}

local config = { socket = nil, model = nil, auto_start = true, agentd_cmd = nil }

local state = {
  buffers = {}, ---@type table<string, integer> session id -> its buffer
  roots = {}, ---@type table<integer, string> a session buffer -> its project root
  workspace_id = nil,
  session_id = nil,
  run = nil, -- {id, state, text, error, chars, reply_line, buf, session_id, workspace_id, agent_error, cancel_requested}
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
  if state.roots[buf] then
    return state.roots[buf]
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

-- The buffer -------------------------------------------------------------------

local function session_buffer(session_id, root)
  local buf = state.buffers[session_id]
  if buf and vim.api.nvim_buf_is_valid(buf) then
    return buf
  end
  buf = vim.api.nvim_create_buf(true, true)
  vim.api.nvim_buf_set_name(buf, 'agentd://' .. session_id)
  vim.bo[buf].buftype = 'nofile'
  vim.bo[buf].bufhidden = 'hide'
  vim.bo[buf].swapfile = false
  vim.bo[buf].filetype = 'markdown'
  vim.bo[buf].modifiable = false
  state.buffers[session_id] = buf
  state.roots[buf] = root
  return buf
end

local function show(buf)
  if vim.fn.bufwinid(buf) ~= -1 then
    return
  end
  vim.cmd('botright split')
  vim.api.nvim_win_set_buf(0, buf)
end

local function edit(buf, first, last, lines)
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, first, last, false, lines)
  vim.bo[buf].modifiable = false
end

--- Start a run's part of the buffer: the prompt quoted, then the line where the reply goes.
local function begin_turn(buf, prompt)
  local lines = {}
  for _, line in ipairs(vim.split(prompt, '\n', { plain = true })) do
    table.insert(lines, '> ' .. line)
  end
  table.insert(lines, '')
  table.insert(lines, '')
  local count = vim.api.nvim_buf_line_count(buf)
  local empty = count == 1 and vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1] == ''
  local first = empty and 0 or count
  if not empty then
    table.insert(lines, 1, '')
  end
  edit(buf, first, empty and 1 or count, lines)
  return vim.api.nvim_buf_line_count(buf) - 1 -- 0-based line where the reply starts
end

local function append(buf, text)
  local last = vim.api.nvim_buf_line_count(buf) - 1
  local tail = vim.api.nvim_buf_get_lines(buf, last, last + 1, false)[1] or ''
  local pieces = vim.split(text, '\n', { plain = true })
  pieces[1] = tail .. pieces[1]
  edit(buf, last, last + 1, pieces)
end

-- The run ----------------------------------------------------------------------

local function add_delta(run, payload)
  local text, offset = payload.text, payload.offset
  if type(text) ~= 'string' or type(offset) ~= 'number' then
    return
  end
  -- offsets count code points; a delta that overlaps what we have (sent again) adds only its new part.
  if offset < run.chars then
    text = vim.fn.strcharpart(text, run.chars - offset)
  end
  if text == '' then
    return
  end
  run.text = run.text .. text
  run.chars = run.chars + vim.fn.strchars(text)
  if vim.api.nvim_buf_is_valid(run.buf) then
    append(run.buf, text)
  end
end

local function finish(run, payload)
  -- The stored text is the whole answer: it repairs deltas that were dropped on the way.
  if type(payload.text) == 'string' and payload.text ~= run.text then
    run.text = payload.text
    run.chars = vim.fn.strchars(payload.text)
    if vim.api.nvim_buf_is_valid(run.buf) then
      edit(run.buf, run.reply_line, -1, vim.split(payload.text, '\n', { plain = true }))
    end
  end
  local err = payload.error
  if payload.cancelled == true then
    run.state = 'cancelled'
    run.error = 'run cancelled'
  elseif err ~= nil and err ~= vim.NIL and err ~= '' then
    run.state = 'error'
    run.error = tostring(err)
  elseif run.agent_error then
    run.state = 'error'
    run.error = run.agent_error
  else
    run.state = 'done'
  end
  if run.state ~= 'done' then
    notify(run.error, vim.log.levels.WARN)
  end
end

--- An agent.error belongs to us by its run_id when it has one, else by its session:
--- async errors of other runs share the workspace's stream, and must not fail ours.
local function agent_error_is_ours(run, payload)
  local run_id = payload.run_id
  if run_id ~= nil and run_id ~= vim.NIL and run_id ~= '' then
    return run_id == run.id
  end
  local session_id = payload.session_id
  return session_id ~= nil and session_id ~= vim.NIL and session_id == run.session_id
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
  if kind == 'message.delta' then
    if payload.run_id == run.id then
      add_delta(run, payload)
    end
  elseif kind == 'agent.error' then
    -- Not the end: our run's run.complete follows, and says how it ended.
    if agent_error_is_ours(run, payload) then
      run.agent_error = 'agent error: ' .. tostring(payload.message)
    end
  elseif kind == 'run.complete' then
    if payload.run_id == run.id then
      finish(run, payload)
    end
  end
end

--- Every event, after the run has seen it, also goes to `User AgentdEvent` autocommands
--- (the envelope is their `data`): statuslines and other plugins follow along there.
local function on_event(envelope)
  run_event(envelope)
  vim.api.nvim_exec_autocmds('User', { pattern = 'AgentdEvent', modeline = false, data = envelope })
end

--- The connection is gone and the link has stopped seeking it: the run we follow cannot be followed any more.
--- (A drop the link recovers from is not this: it says so itself, and `on_resumed` follows.)
local function on_lost(reason)
  local run = state.run
  if run and run.state == 'running' then
    run.state = 'error'
    run.error = reason
    notify(reason, vim.log.levels.WARN)
  end
end

local NOT_FOUND = 2 -- agentd's code for an unknown id
local send

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
      send(conn, run, run.send_args)
    elseif got and type(got.complete) == 'table' then
      run_event({ workspace_id = run.workspace_id, type = 'run.complete', payload = got.complete })
    end
  end)
end

-- Session ----------------------------------------------------------------------

local function with_session(conn, ws, callback)
  if ws.session_id then
    return callback(nil, ws.session_id)
  end
  conn:request('session.create', { workspace_id = ws.id }, function(err, session)
    if err then
      return callback('session.create: ' .. error_text(err))
    end
    ws.session_id = session.id
    callback(nil, session.id)
  end)
end

-- Commands ---------------------------------------------------------------------

--- agent.send for `run`; a reply lost with the connection is not the run's failure: on_resumed asks how it went.
send = function(conn, run, args)
  conn:request('agent.send', args, function(err)
    if err and run.state == 'running' and not link.is_lost(err) then
      run.state = 'error'
      run.error = 'agent.send: ' .. error_text(err)
      notify(run.error, vim.log.levels.ERROR)
    end
  end)
end

--- Run `prompt` in the current session of the current buffer's project, streaming the reply.
---@param prompt string
function M.ask(prompt)
  if prompt == nil or prompt == '' then
    return notify('give a prompt: :Agent {prompt}', vim.log.levels.ERROR)
  end
  if state.run and state.run.state == 'running' then
    return notify('a run is still going (' .. state.run.id .. '); :AgentCancel it first', vim.log.levels.ERROR)
  end
  local root = project_root()
  local run = { id = new_run_id(), state = 'running', text = '', chars = 0, error = nil }
  state.run = run
  local function fail(message)
    run.state = 'error'
    run.error = message
    notify(message, vim.log.levels.ERROR)
  end
  link.with_connection(function(err, conn)
    if err then
      return fail(err)
    end
    link.with_workspace(conn, root, function(werr, ws)
      if werr then
        return fail(werr)
      end
      with_session(conn, ws, function(serr, session_id)
        if serr then
          return fail(serr)
        end
        state.workspace_id, state.session_id = ws.id, session_id
        run.workspace_id, run.session_id = ws.id, session_id
        run.buf = session_buffer(session_id, root)
        run.reply_line = begin_turn(run.buf, prompt)
        show(run.buf)
        local args = { workspace_id = ws.id, session_id = session_id, prompt = prompt, run_id = run.id }
        if config.model then
          args.model = config.model
        end
        run.send_args = args
        send(conn, run, args)
      end)
    end)
  end)
end

--- Cancel the run `:Agent` started, if it is still going; its run.complete ends it.
function M.cancel()
  local run = state.run
  local conn = link.conn()
  if not run or run.state ~= 'running' or not run.session_id or not conn then
    return notify('no run to cancel')
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
  vim.api.nvim_create_user_command('Agent', function(cmd)
    M.ask(cmd.args)
  end, { nargs = '+', desc = 'Run a prompt in agentd, streaming the reply into the session buffer' })
  vim.api.nvim_create_user_command('AgentCancel', function()
    M.cancel()
  end, { nargs = 0, desc = 'Cancel the run :Agent started' })
end

-- Without setup() too: require('agentd').ask() works with the defaults.
configure_link()

return M
