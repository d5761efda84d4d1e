--- Starting agentd when none answers, the way agentctl does, without blocking the editor.
---
--- The daemon is started in its own session (our Ctrl-C is not its: it serves
--- other clients too), logs to `$XDG_STATE_HOME/agentd/agentd.log` with its
--- stdout and stderr there as well, and says it listens by writing `ready` to a
--- pipe it is given as fd 3 (`--ready-fd 3`), so nothing polls for the socket.
--- An agentd that exits 75 found another one holding the socket path (a second
--- editor, or agentctl, started it at the same moment): that one is waited for.
local M = {}

local uv = vim.uv

M.READY_TIMEOUT_MS = 15000
-- After ours exited 75, how long the agentd that holds the path has to start listening.
M.OTHER_READY_TIMEOUT_MS = 15000
local EX_TEMPFAIL = 75 -- agentd: another agentd holds the socket path
local PROBE_MS = 100

--- `$XDG_STATE_HOME/agentd`, else `~/.local/state/agentd`: where agentctl keeps the daemon's log too.
local function state_dir()
  local base = vim.env.XDG_STATE_HOME
  if not base or base == '' then
    base = vim.fs.joinpath(uv.os_homedir(), '.local', 'state')
  end
  return vim.fs.joinpath(base, 'agentd')
end

function M.log_path()
  return vim.fs.joinpath(state_dir(), 'agentd.log')
end

--- The daemon's command line up to its options: `cmd` as given, its program found on $PATH.
---@param cmd string[]
---@return string[]|nil argv, string|nil err
local function resolve(cmd)
  local program = vim.fn.exepath(cmd[1])
  if program == '' then
    return nil,
      ('cannot start agentd: %s is not an executable on $PATH; install agentd or set agentd_cmd in setup()'):format(
        vim.inspect(cmd[1])
      )
  end
  local argv = vim.list_extend({ program }, cmd, 2)
  return argv
end

--- The daemon's log opened for appending, 0600 (run errors in it are nobody else's to read), never through a symlink.
---@return integer|nil fd, string|nil err
local function make_dirs(dir)
  local parent = vim.fs.dirname(dir)
  if parent ~= dir and not uv.fs_stat(parent) then
    local ok, err = make_dirs(parent)
    if not ok then
      return nil, err
    end
  end
  -- Not vim.fn.mkdir(dir, 'p'): it fails (E739) when another editor, starting
  -- the daemon at the same moment, makes the folder between its check and its mkdir.
  local ok, err, name = uv.fs_mkdir(dir, tonumber('700', 8))
  if not ok and name ~= 'EEXIST' then
    return nil, err
  end
  return true
end

local function open_log(path)
  local dir = vim.fs.dirname(path)
  local made, why = make_dirs(dir)
  if not made then
    return nil, ('cannot prepare the daemon\'s log folder %s: %s'):format(dir, why)
  end
  local stat = uv.fs_lstat(path)
  if stat and stat.type ~= 'file' then
    return nil, ('the daemon\'s log %s is a %s, not a file'):format(path, stat.type)
  end
  local fd, err = uv.fs_open(path, 'a', tonumber('600', 8))
  if not fd then
    return nil, ('cannot open the daemon\'s log %s: %s'):format(path, err)
  end
  local fstat = uv.fs_fstat(fd)
  if fstat and fstat.mode % 64 ~= 0 then
    uv.fs_fchmod(fd, tonumber('600', 8)) -- one an older agentd made 0644
  end
  return fd
end

--- The log's last line: agentd's own words on why it stopped.
local function last_line(path)
  local fd = uv.fs_open(path, 'r', 0)
  if not fd then
    return '(no log)'
  end
  local size = uv.fs_fstat(fd).size
  local tail = uv.fs_read(fd, 4096, math.max(0, size - 4096)) or ''
  uv.fs_close(fd)
  local lines = vim.split(vim.trim(tail), '\n', { plain = true })
  return lines[#lines] ~= '' and lines[#lines] or '(empty log)'
end

--- Whether something accepts connections on `path`; `callback(listening)`.
local function probe(path, callback)
  local pipe = assert(uv.new_pipe(false))
  pipe:connect(path, function(err)
    pipe:close()
    callback(err == nil)
  end)
end

--- Start agentd on `socket_path`; `callback(err)` once it listens (nil) or could not be started.
---@param socket_path string
---@param cmd string[] the daemon's program and leading arguments, e.g. `{'agentd'}`
---@param callback fun(err: string|nil)
function M.start(socket_path, cmd, callback)
  local argv, err = resolve(cmd)
  if not argv then
    return vim.schedule_wrap(callback)(err)
  end
  local log_path = M.log_path()
  local log_fd, lerr = open_log(log_path)
  if not log_fd then
    return vim.schedule_wrap(callback)('cannot start agentd: ' .. lerr)
  end
  local null_fd = assert(uv.fs_open('/dev/null', 'r', 0))
  vim.list_extend(argv, { '--socket', socket_path, '--ready-fd', '3', '--log-file', log_path })

  local ready = assert(uv.new_pipe(false))
  local timer = assert(uv.new_timer())
  local deadline -- of the wait for another agentd, once ours has found one
  local done, exited = false, false
  local handle

  local function close_ready()
    if not ready:is_closing() then
      ready:close()
    end
  end

  local function finish(result)
    if done then
      return
    end
    done = true
    timer:stop()
    timer:close()
    close_ready()
    vim.schedule(function()
      callback(result)
    end)
  end

  -- Another agentd took the path first: wait, bounded, until it listens.
  local function wait_for_other()
    if uv.now() >= deadline then
      return finish(('another agentd holds %s but did not start listening within %gs (log: %s)'):format(
        socket_path,
        M.OTHER_READY_TIMEOUT_MS / 1000,
        log_path
      ))
    end
    probe(socket_path, function(listening)
      if listening then
        return finish(nil)
      end
      timer:start(PROBE_MS, 0, wait_for_other)
    end)
  end

  local pid
  handle, pid = uv.spawn(argv[1], {
    args = vim.list_slice(argv, 2),
    stdio = { null_fd, log_fd, log_fd, ready },
    detached = true,
  }, function(code, signal)
    exited = true
    handle:close()
    if done then
      return
    end
    if code == EX_TEMPFAIL then
      timer:stop()
      deadline = uv.now() + M.OTHER_READY_TIMEOUT_MS
      return wait_for_other()
    end
    local how = signal ~= 0 and ('was killed by signal %d'):format(signal) or ('exited with status %d'):format(code)
    finish(('agentd %s while starting: %s (log: %s)'):format(how, last_line(log_path), log_path))
  end)
  uv.fs_close(log_fd)
  uv.fs_close(null_fd)
  if not handle then
    return finish(('cannot start agentd (%s): %s'):format(table.concat(argv, ' '), pid))
  end
  handle:unref() -- the daemon outlives the editor; its handle must not keep Neovim's loop alive

  timer:start(M.READY_TIMEOUT_MS, 0, function()
    if not exited then
      handle:kill('sigkill')
    end
    finish(('agentd did not become ready within %gs (log: %s)'):format(M.READY_TIMEOUT_MS / 1000, log_path))
  end)
  local said = ''
  ready:read_start(function(rerr, data)
    if rerr or not data then
      -- It closed the pipe without saying ready: it is exiting, and its exit status says why.
      close_ready()
      return
    end
    said = said .. data
    if said:find('\n') then
      if vim.startswith(said, 'ready') then
        finish(nil)
      else
        close_ready()
      end
    end
  end)
end

return M
