"""The control socket: its protocol and server (protocol), and what a running agent
answers on it (operations)."""
