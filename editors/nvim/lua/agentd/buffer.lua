--- The session buffers, `agentd://<session_id>`: how a conversation looks, stored or streaming.
---
--- A buffer is filled whole from `session.messages`, or grows by one turn per
--- run: the prompt quoted, then the run's items as they come, text and tool
--- calls. Both go through `render_items`, so a run looks the same streamed as
--- it does read back (except that a stored call shows its arguments, where a
--- streamed one shows the daemon's one-line description of it).
local M = {}

local TOOL_MARK = '▸'
local OUTPUT_LINES = 3 -- of a tool's output, shown under its line
local LINE_CHARS = 160 -- a summary or an output line, clipped

local buffers = {} ---@type table<string, integer> session id -> its buffer
local roots = {} ---@type table<integer, string> one of our buffers -> its project root

local function edit(buf, first, last, lines)
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, first, last, false, lines)
  vim.bo[buf].modifiable = false
end

--- `text` on one line, whitespace runs as one space, at most `limit` characters.
local function one_line(text, limit)
  limit = limit or LINE_CHARS
  local line = vim.trim((tostring(text):gsub('%s+', ' ')))
  if vim.fn.strchars(line) <= limit then
    return line
  end
  return vim.fn.strcharpart(line, 0, limit - 1) .. '…'
end
M.one_line = one_line

--- The session's buffer, made the first time (scratch, not modifiable).
---@param session_id string
---@param root string the project root the session's workspace is at
---@return integer
function M.get(session_id, root)
  local buf = buffers[session_id]
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
  buffers[session_id] = buf
  roots[buf] = root
  return buf
end

--- The project root of one of our buffers (a session's, a diff), nil for any other buffer.
---@param buf integer
---@return string|nil
function M.root_of(buf)
  return roots[buf]
end

--- Say which project one of our other buffers belongs to: commands typed in it act there.
---@param buf integer
---@param root string
function M.set_root(buf, root)
  roots[buf] = root
end

--- Show `buf` in a split, unless a window shows it already.
function M.show(buf)
  if vim.fn.bufwinid(buf) ~= -1 then
    return
  end
  vim.cmd('botright split')
  vim.api.nvim_win_set_buf(0, buf)
end

-- Rendering --------------------------------------------------------------------

---@class agentd.ToolItem
---@field kind 'tool'
---@field call_id string
---@field what string what the call does, in a line
---@field status string|nil nil while it runs
---@field summary string|nil
---@field output string|nil

---@class agentd.TextItem
---@field kind 'text'
---@field message_id string|nil
---@field text string

--- A tool call's lines: `▸ what (how it ended)`, then the first lines of its output.
---@param item agentd.ToolItem
---@return string[]
local function tool_lines(item)
  local what = one_line(item.what)
  local head
  if item.status == nil then
    head = ('%s %s …'):format(TOOL_MARK, what)
  else
    local summary = one_line(item.summary or '')
    -- A refused call's summary already says how (`denied: bash: rm x`).
    local how = (item.status == 'ok' or vim.startswith(summary, item.status .. ':')) and summary
      or (item.status .. ': ' .. summary)
    head = ('%s %s (%s)'):format(TOOL_MARK, what, how)
  end
  local lines = { head }
  if type(item.output) == 'string' and item.output ~= '' then
    local out = vim.split((item.output:gsub('\n+$', '')), '\n', { plain = true })
    for i = 1, math.min(#out, OUTPUT_LINES) do
      table.insert(lines, '  ' .. one_line(out[i]))
    end
    if #out > OUTPUT_LINES then
      local more = #out - OUTPUT_LINES
      table.insert(lines, ('  … %d more line%s'):format(more, more == 1 and '' or 's'))
    end
  end
  return lines
end

--- The lines of a turn's items. The last item's lines end the list, so text
--- streaming into a last text item is appended to the buffer's last line.
---@param items (agentd.TextItem|agentd.ToolItem)[]
---@return string[]
-- How a stored assistant message that did not finish shows its end (its run's error is not stored with it).
local STORED_ENDINGS = { cancelled = '[cancelled]', error = '[failed]' }

local function render_items(items)
  local lines = {}
  local previous = nil
  for i, item in ipairs(items) do
    local these
    if item.kind == 'text' then
      -- An empty message that only called tools takes no room; the last one is where text will stream.
      these = (item.text ~= '' or i == #items) and vim.split(item.text, '\n', { plain = true }) or {}
    elseif item.kind == 'end' then
      these = { item.text }
    else
      these = tool_lines(item)
    end
    if #these > 0 then
      if previous and previous ~= item.kind then
        table.insert(lines, '')
      end
      vim.list_extend(lines, these)
      previous = item.kind
    end
  end
  if #lines == 0 then
    lines = { '' }
  end
  return lines
end

local function prompt_lines(prompt)
  local lines = {}
  for _, line in ipairs(vim.split(prompt, '\n', { plain = true })) do
    table.insert(lines, '> ' .. line)
  end
  table.insert(lines, '')
  return lines
end

local function find_tool(items, call_id)
  for _, item in ipairs(items) do
    if item.kind == 'tool' and item.call_id == call_id then
      return item
    end
  end
  return nil
end

--- Set each result part's outcome on its call's item (a result without one gets its own).
local function add_results(items, parts)
  for _, part in ipairs(type(parts) == 'table' and parts or {}) do
    if type(part) == 'table' and part.type == 'tool_result' then
      local item = find_tool(items, part.call_id)
      if not item then
        item = { kind = 'tool', call_id = part.call_id, what = tostring(part.name) }
        table.insert(items, item)
      end
      item.status = tostring(part.status)
      item.summary = part.summary
      item.output = part.output
    end
  end
end

--- Fill `buf` with a stored conversation (`session.messages`, oldest first).
---@param buf integer
---@param messages table[]
function M.fill(buf, messages)
  local lines = {}
  local items = nil
  local function close_turn()
    if items then
      vim.list_extend(lines, render_items(items))
    end
  end
  for _, message in ipairs(messages) do
    local text = type(message.text) == 'string' and message.text or ''
    if message.role == 'user' then
      close_turn()
      if #lines > 0 then
        table.insert(lines, '')
      end
      vim.list_extend(lines, prompt_lines(text))
      items = {}
    else
      items = items or {}
      if message.role == 'assistant' then
        table.insert(items, { kind = 'text', message_id = message.id, text = text })
        local ending = STORED_ENDINGS[message.finish_reason]
        for _, part in ipairs(type(message.parts) == 'table' and message.parts or {}) do
          if type(part) == 'table' and part.type == 'tool_call' then
            local args = part.arguments
            if type(args) ~= 'string' then
              args = vim.json.encode(args)
            end
            table.insert(items, { kind = 'tool', call_id = part.call_id, what = ('%s %s'):format(part.name, args) })
          end
        end
        if ending then
          table.insert(items, { kind = 'end', text = ending })
        end
      elseif message.role == 'tool' then
        add_results(items, message.parts)
      end
    end
  end
  close_turn()
  edit(buf, 0, -1, lines)
end

-- A run's turn -----------------------------------------------------------------

---@class agentd.Turn
---@field buf integer
---@field body integer 0-based line where the items start
---@field items (agentd.TextItem|agentd.ToolItem)[]
---@field done boolean
local Turn = {}
Turn.__index = Turn

--- Start a run's turn at the end of `buf`: its prompt quoted, then where its items go.
---@param buf integer
---@param prompt string
---@return agentd.Turn
function M.begin_turn(buf, prompt)
  local lines = prompt_lines(prompt)
  table.insert(lines, '')
  local count = vim.api.nvim_buf_line_count(buf)
  local empty = count == 1 and vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1] == ''
  if not empty then
    table.insert(lines, 1, '')
  end
  edit(buf, empty and 0 or count, -1, lines)
  return setmetatable({
    buf = buf,
    body = vim.api.nvim_buf_line_count(buf) - 1,
    items = { { kind = 'text', text = '' } },
    done = false,
  }, Turn)
end

function Turn:_redraw()
  if vim.api.nvim_buf_is_valid(self.buf) then
    edit(self.buf, self.body, -1, render_items(self.items))
  end
end

--- The text item of `message_id`, made (at the end) if the turn has none yet.
function Turn:_text_item(message_id)
  local last = self.items[#self.items]
  -- The placeholder begin_turn made takes the first message's id.
  if last.kind == 'text' and (last.message_id == nil or last.message_id == message_id) and last.text == '' then
    last.message_id = message_id
    return last, true
  end
  for _, item in ipairs(self.items) do
    if item.kind == 'text' and item.message_id == message_id then
      return item, item == last
    end
  end
  local item = { kind = 'text', message_id = message_id, text = '' }
  table.insert(self.items, item)
  return item, false
end

--- Text streamed into the assistant message `message_id`.
function Turn:append(message_id, text)
  local item, is_last = self:_text_item(message_id)
  local was_empty = item.text == ''
  item.text = item.text .. text
  if not (is_last and vim.api.nvim_buf_is_valid(self.buf)) or (was_empty and #self.items > 1) then
    return self:_redraw()
  end
  -- The common case, kept cheap: the text goes on the buffer's last line.
  local last = vim.api.nvim_buf_line_count(self.buf) - 1
  local tail = vim.api.nvim_buf_get_lines(self.buf, last, last + 1, false)[1] or ''
  local pieces = vim.split(text, '\n', { plain = true })
  pieces[1] = tail .. pieces[1]
  edit(self.buf, last, last + 1, pieces)
end

--- The whole text of `message_id`, as stored: it repairs what was lost on the way.
function Turn:set_text(message_id, text)
  local item = self:_text_item(message_id)
  if item.text ~= text then
    item.text = text
    self:_redraw()
  end
end

function Turn:tool_started(payload)
  if find_tool(self.items, payload.call_id) then
    return
  end
  table.insert(self.items, { kind = 'tool', call_id = payload.call_id, what = payload.summary or payload.name })
  self:_redraw()
end

function Turn:tool_finished(payload)
  local item = find_tool(self.items, payload.call_id)
  if not item then
    item = { kind = 'tool', call_id = payload.call_id, what = payload.name }
    table.insert(self.items, item)
  end
  item.status = tostring(payload.status)
  item.summary = payload.summary
  self:_redraw()
end

--- The run's `tool` message: every call's result, with the output the events lack.
function Turn:tool_results(parts)
  add_results(self.items, parts)
  self:_redraw()
end

--- The run is over; `ending` (`[cancelled]`, `[error: ...]`) closes its turn when it did not simply finish.
---@param ending string|nil
function Turn:finish(ending)
  self.done = true
  if ending then
    table.insert(self.items, { kind = 'end', text = ending })
    self:_redraw()
  end
end

return M
