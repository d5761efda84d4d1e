--- What runs did to the project's files: reloading the buffers of changed files, :AgentDiff and :AgentUndo.
---
--- Diff and undo name the run as `agentctl diff` and `agentctl undo` do by
--- default: the last run of a session (`run.changes` / `run.revert` given
--- `workspace_id` and `session_id`), and say the same things.
local buffer = require('agentd.buffer')
local link = require('agentd.link')

local M = {}

local NOT_FOUND, CONFLICT = 2, 3
-- What the run did, undone: said for each file undo put back.
local UNDONE = { created = 'removed %s (the run created it)', changed = 'restored %s', deleted = 'recreated %s' }

local function notify(message, level)
  vim.notify('agentd: ' .. message, level or vim.log.levels.INFO)
end

local function plural(n, word)
  return ('%d %s%s'):format(n, word, n == 1 and '' or 's')
end

--- The loaded file buffers under `root`, by path relative to it.
local function file_buffers(root)
  local prefix = vim.fs.normalize(root):gsub('/$', '') .. '/'
  local found = {}
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.bo[buf].buftype == '' then
      local name = vim.api.nvim_buf_get_name(buf)
      if name ~= '' then
        name = vim.fs.normalize(vim.fn.fnamemodify(name, ':p'))
        if vim.startswith(name, prefix) then
          found[name:sub(#prefix + 1)] = buf
        end
      end
    end
  end
  return found
end

--- `:checktime` the open buffers of files under `root` (of `paths` only, when given) that have
--- no unsaved changes: they show the file as it is now. A buffer with unsaved changes is left
--- alone, and said, so an answer never throws away typing.
---@param root string
---@param paths string[]|nil relative to root, `/`-separated
function M.reload(root, paths)
  local buffers = file_buffers(root)
  local wanted = buffers
  if paths then
    wanted = {}
    for _, path in ipairs(paths) do
      wanted[path] = buffers[path]
    end
  end
  local kept = {}
  for path, buf in pairs(wanted) do
    if vim.bo[buf].modified then
      table.insert(kept, path)
    else
      -- A file the run removed makes :checktime say so (E211), as an error: it is not one here.
      pcall(vim.cmd.checktime, buf)
    end
  end
  if paths and #kept > 0 then
    table.sort(kept)
    notify(
      ('the run changed %s, which you have unsaved changes to; :checktime to choose'):format(table.concat(kept, ', ')),
      vim.log.levels.WARN
    )
  end
end

--- After a run with changes ended: reload exactly the files it changed.
---@param conn agentd.Connection
---@param root string
---@param run_id string
function M.reload_run(conn, root, run_id)
  conn:request('run.changes', { run_id = run_id }, function(err, listed)
    if err or type(listed) ~= 'table' then
      return M.reload(root) -- whatever changed: every unmodified buffer under root is looked at
    end
    local paths = {}
    for _, file in ipairs(listed.files or {}) do
      table.insert(paths, file.path)
    end
    M.reload(root, paths)
  end)
end

--- The daemon's refusals that mean there is nothing to do, said for a person; nil for other errors.
local function nothing_to_do(err, command)
  local code, message = type(err) == 'table' and err[1], link.error_text(err)
  if code == NOT_FOUND and vim.endswith(message, ' has no runs') then
    return ('%s, so nothing to %s'):format(message, command)
  end
  if code == CONFLICT and vim.endswith(message, ' was already reverted') then
    return message:gsub(' was already reverted$', '') .. ' was already undone; nothing to undo'
  end
  return nil
end

local function counted(files)
  local parts = {}
  for _, kind in ipairs({ 'created', 'changed', 'deleted' }) do
    local n = #vim.tbl_filter(function(f)
      return f.action == kind
    end, files)
    if n > 0 then
      table.insert(parts, ('%d %s'):format(n, kind))
    end
  end
  return ('%s (%s)'):format(plural(#files, 'file'), table.concat(parts, ', '))
end

--- Show the last run's changes in a scratch buffer (filetype `diff`).
---@param conn agentd.Connection
---@param target {workspace_id: string, session_id: string}
---@param root string the workspace's root: :AgentUndo typed in the diff's buffer undoes that run
function M.diff(conn, target, root)
  conn:request('run.changes', target, function(err, listed)
    if err then
      local nothing = nothing_to_do(err, 'diff')
      if nothing then
        return notify(nothing)
      end
      return notify('run.changes: ' .. link.error_text(err), vim.log.levels.ERROR)
    end
    local files = listed.files or {}
    if #files == 0 then
      return notify(('run %s changed no files'):format(listed.run_id))
    end
    local text = {}
    local notes = {}
    for _, file in ipairs(files) do
      table.insert(text, file.diff)
      if file.changed_since and not file.reverted then
        table.insert(notes, ('%s has changed since the run'):format(file.path))
      end
    end
    local name = 'agentd://diff/' .. listed.run_id
    local buf = vim.fn.bufnr('^' .. vim.pesc(name) .. '$')
    if buf == -1 then
      buf = vim.api.nvim_create_buf(true, true)
      vim.api.nvim_buf_set_name(buf, name)
      vim.bo[buf].buftype = 'nofile'
      vim.bo[buf].bufhidden = 'wipe'
      vim.bo[buf].swapfile = false
      buffer.set_root(buf, root)
    end
    vim.bo[buf].modifiable = true
    local lines = vim.split((table.concat(text):gsub('\n$', '')), '\n', { plain = true })
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
    vim.bo[buf].modifiable = false
    vim.bo[buf].filetype = 'diff'
    if vim.fn.bufwinid(buf) == -1 then
      vim.cmd('botright split')
      vim.api.nvim_win_set_buf(0, buf)
    end
    local undone = listed.reverted_at ~= nil and listed.reverted_at ~= vim.NIL and ' (undone since)' or ''
    table.insert(notes, 1, ('run %s: %s%s'):format(listed.run_id, counted(files), undone))
    notify(table.concat(notes, '\n'))
  end)
end

--- Put back what the last run changed; with `force`, files changed since too.
---@param conn agentd.Connection
---@param target {workspace_id: string, session_id: string}
---@param root string the workspace's root, whose buffers are reloaded after
---@param force boolean
function M.undo(conn, target, root, force)
  local params = vim.tbl_extend('force', target, { force = force })
  conn:request('run.revert', params, function(err, result)
    if err then
      local nothing = nothing_to_do(err, 'undo')
      if nothing then
        return notify(nothing)
      end
      local message = link.error_text(err)
      if type(err) == 'table' and err[1] == CONFLICT and message:find(' is still ', 1, true) then
        message = message:gsub(';.*$', '') .. '; undo it once it has ended (:AgentCancel ends it now)'
      else
        message = 'run.revert: ' .. message
      end
      return notify(message, vim.log.levels.ERROR)
    end
    local reverted, refused = result.reverted or {}, result.refused or {}
    if #reverted == 0 and #refused == 0 then
      return notify(('run %s changed no files; nothing to undo'):format(result.run_id))
    end
    local lines, paths = {}, {}
    for _, file in ipairs(reverted) do
      table.insert(lines, UNDONE[file.action]:format(file.path))
      table.insert(paths, file.path)
    end
    if #reverted > 0 then
      table.insert(lines, ('undid run %s: %s put back'):format(result.run_id, plural(#reverted, 'file')))
      M.reload(root, paths)
    end
    if #refused == 0 then
      return notify(table.concat(lines, '\n'))
    end
    for _, file in ipairs(refused) do
      table.insert(lines, ('%s: %s'):format(file.path, file.reason))
    end
    if #reverted == 0 and not force then
      table.insert(lines, 'nothing undone; :AgentUndo! puts back what it can, files changed since included')
    end
    notify(table.concat(lines, '\n'), vim.log.levels.ERROR)
  end)
end

return M
