"""`agentctl acp`: an Agent Client Protocol agent on stdio that drives the shared agentd.

An editor starts `agentctl acp` and speaks ACP (JSON-RPC 2.0, one message per
line) on its stdin and stdout; the bridge turns that into agentd's requests and
agentd's events into ACP's `session/update` notifications. Sessions, runs and
their guarantees are the daemon's: a session begun here is every client's.
"""
