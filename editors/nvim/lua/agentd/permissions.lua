--- Permission requests of the subscribed workspaces: asked about one at a time, answered with `permission.grant`.
---
--- A request is asked through `vim.ui.select`, so a picker plugin (telescope,
--- fzf-lua, dressing) shows it. `vim.ui.select` has no way to close a picker,
--- and a request can end elsewhere while it is asked (another client answers
--- first, it times out, its run is cancelled); so while `vim.ui.select` is
--- Neovim's own (an `inputlist()`, which blocks the editor and could not be
--- closed), a small floating picker of ours asks instead, and closes then. Any
--- other picker stays open; its answer is then dropped, never sent late, and
--- the user is told at once.
local link = require('agentd.link')

local M = {}

--- The daemon's four answers, in the order they are offered.
M.answers = {
  { action = 'allow', label = 'Allow once', key = 'o' },
  { action = 'allow_session', label = 'Allow for this session', key = 's' },
  { action = 'deny', label = 'Deny', key = 'd' },
  { action = 'deny_session', label = 'Deny for this session', key = 'D' },
}

local state = {
  waiting = {}, ---@type {workspace_id: string, request: table}[]
  asking = nil, ---@type {workspace_id: string, request: table, close: fun()|nil, ended: boolean}|nil
  -- Each request id this connection's workspaces issued: `waiting`, `asking`, `ended`, or the action we answered.
  -- A request the daemon sends again (a resubscribe replays the pending ones) is not asked about twice;
  -- one we answered is answered again, in case the answer was lost with the connection.
  known = {}, ---@type table<string, string>
}

local function notify(message, level)
  vim.notify('agentd: ' .. message, level or vim.log.levels.INFO)
end

--- Whether `vim.ui.select` is still Neovim's own (no picker plugin replaced it).
local function builtin_select()
  local info = debug.getinfo(vim.ui.select, 'S')
  return info ~= nil and info.source:match('vim/ui%.lua$') ~= nil
end

--- A floating list of `items`; `on_choice(item)` once (nil when dismissed). Returns its close().
local function float_select(items, opts, on_choice)
  local lines = {}
  local width = vim.fn.strdisplaywidth(opts.prompt)
  for i, item in ipairs(items) do
    lines[i] = (' %d. %s (%s)'):format(i, opts.format_item(item), item.key)
    width = math.max(width, vim.fn.strdisplaywidth(lines[i]) + 1)
  end
  width = math.min(width + 2, math.max(20, vim.o.columns - 4))
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = 'wipe'
  vim.bo[buf].filetype = 'agentd_permission'
  local win = vim.api.nvim_open_win(buf, true, {
    relative = 'editor',
    row = math.max(0, math.floor((vim.o.lines - #lines) / 2) - 1),
    col = math.max(0, math.floor((vim.o.columns - width) / 2)),
    width = width,
    height = #lines,
    style = 'minimal',
    border = 'rounded',
    title = ' ' .. opts.prompt .. ' ',
    title_pos = 'center',
  })
  vim.wo[win].cursorline = true
  vim.cmd.stopinsert() -- the answers are keys of normal mode
  local done = false
  local function close()
    done = true
    if vim.api.nvim_win_is_valid(win) then
      vim.api.nvim_win_close(win, true)
    end
  end
  local function choose(item)
    if done then
      return
    end
    close()
    on_choice(item)
  end
  local function map(lhs, item_of)
    vim.keymap.set('n', lhs, function()
      choose(item_of())
    end, { buffer = buf, nowait = true })
  end
  for i, item in ipairs(items) do
    map(tostring(i), function()
      return item
    end)
    map(item.key, function()
      return item
    end)
  end
  map('<CR>', function()
    return items[vim.api.nvim_win_get_cursor(win)[1]]
  end)
  for _, lhs in ipairs({ '<Esc>', 'q' }) do
    map(lhs, function()
      return nil
    end)
  end
  -- Closed another way (:q, :only): that is no answer.
  vim.api.nvim_create_autocmd('BufWipeout', {
    buffer = buf,
    once = true,
    callback = function()
      vim.schedule(function()
        choose(nil)
      end)
    end,
  })
  return close
end

--- Send our answer; `again` when it repeats one that may have been lost, so its refusal says nothing new.
local function grant(workspace_id, request, action, again)
  local conn = link.conn()
  if not conn then
    return notify(('cannot answer %s: not connected'):format(request.description), vim.log.levels.ERROR)
  end
  local params = { workspace_id = workspace_id, request_id = request.request_id, action = action }
  conn:request('permission.grant', params, function(err, result)
    if err then
      notify('permission.grant: ' .. link.error_text(err), vim.log.levels.ERROR)
    elseif type(result) == 'table' and result.resolved == false and not again then
      notify(('%s: the request had ended before your answer'):format(request.description), vim.log.levels.WARN)
    end
  end)
end

local ask_next

local function ask(entry)
  state.asking = entry
  local request = entry.request
  local opts = {
    prompt = ('agentd: %s'):format(request.description or request.tool),
    kind = 'agentd.permission',
    format_item = function(answer)
      return answer.label
    end,
  }
  local function on_choice(answer)
    if entry.ended then
      return -- told when it ended; an answer now would only be refused
    end
    entry.ended = true
    state.asking = nil
    -- Dismissing the question is no answer, and no answer is a no (as agentctl's Ctrl-D).
    local action = answer and answer.action or 'deny'
    state.known[request.request_id] = action
    grant(entry.workspace_id, request, action)
    ask_next()
  end
  if builtin_select() then
    entry.close = float_select(M.answers, opts, on_choice)
  else
    vim.ui.select(M.answers, opts, on_choice)
  end
end

ask_next = function()
  if state.asking or #state.waiting == 0 then
    return
  end
  local entry = table.remove(state.waiting, 1)
  state.known[entry.request.request_id] = 'asking'
  ask(entry)
end

local function how_it_ended(payload)
  local outcome = tostring(payload.outcome)
  if outcome == 'timeout' then
    return 'nobody answered in time'
  elseif outcome == 'cancelled' then
    return 'the run was cancelled'
  end
  return ('answered elsewhere: %s (by %s)'):format(outcome, tostring(payload.by))
end

--- Take one event of a subscribed workspace; only permission events do anything.
---@param envelope table
function M.on_event(envelope)
  local payload = envelope.payload
  if type(payload) ~= 'table' or type(payload.request_id) ~= 'string' then
    return
  end
  local request_id = payload.request_id
  local known = state.known[request_id]
  if envelope.type == 'permission.request' then
    if known == nil then
      state.known[request_id] = 'waiting'
      table.insert(state.waiting, { workspace_id = envelope.workspace_id, request = payload, ended = false })
      ask_next()
    elseif known ~= 'waiting' and known ~= 'asking' and known ~= 'ended' then
      grant(envelope.workspace_id, payload, known, true)
    end
  elseif envelope.type == 'permission.resolved' then
    state.known[request_id] = 'ended'
    local entry = state.asking
    if entry and entry.request.request_id == request_id then
      if entry.ended then
        return -- our own answer's resolution
      end
      entry.ended = true
      state.asking = nil
      if entry.close then
        entry.close()
      end
      notify(('%s: %s'):format(entry.request.description, how_it_ended(payload)))
      ask_next()
    else
      state.waiting = vim.tbl_filter(function(w)
        return w.request.request_id ~= request_id
      end, state.waiting)
    end
  end
end

--- The request being asked about now, if any (for :AgentStatus and tests).
---@return table|nil
function M.asking()
  return state.asking and state.asking.request or nil
end

return M
