--- Lines of a buffer attached to a prompt as context: which file, which lines, and the text, fenced.
---
--- The format (documented in `:help agentd-context`):
---
---     {prompt}
---
---     {path}, lines {first}-{last}:
---     ```{filetype}
---     {the lines}
---     ```
---
--- `{path}` is relative to the project root when the file is under it, else
--- absolute; a single line says `line {n}`. The fence is longer than any run of
--- backticks in the text, so the text cannot close it early.
local M = {}

--- A file's path as the prompt names it: relative to `root` when under it.
local function shown_path(buf, root)
  local name = vim.api.nvim_buf_get_name(buf)
  if name == '' then
    return ('[buffer %d]'):format(buf)
  end
  if name:match('^%a[%w+.-]*://') then
    return name
  end
  name = vim.fs.normalize(vim.fn.fnamemodify(name, ':p'))
  local prefix = vim.fs.normalize(root):gsub('/$', '') .. '/'
  if vim.startswith(name, prefix) then
    return name:sub(#prefix + 1)
  end
  return name
end

local function fence_for(text)
  local longest = 2
  for run in text:gmatch('`+') do
    longest = math.max(longest, #run)
  end
  return ('`'):rep(longest + 1)
end

--- `prompt` with lines `first`..`last` (1-based, inclusive) of `buf` attached.
---@param prompt string
---@param buf integer
---@param first integer
---@param last integer
---@param root string the project root paths are relative to
---@return string
function M.attach(prompt, buf, first, last, root)
  local text = table.concat(vim.api.nvim_buf_get_lines(buf, first - 1, last, false), '\n')
  local where = first == last and ('line %d'):format(first) or ('lines %d-%d'):format(first, last)
  local fence = fence_for(text)
  return ('%s\n\n%s, %s:\n%s%s\n%s\n%s'):format(
    prompt,
    shown_path(buf, root),
    where,
    fence,
    vim.bo[buf].filetype,
    text,
    fence
  )
end

return M
