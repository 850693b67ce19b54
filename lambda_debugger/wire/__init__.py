"""What travels between the processes of the chain, used by every one of
them: the control protocol and close codes (:mod:`.protocol`), WebSocket
frames (:mod:`.wsframes`), the one place that reads DAP (:mod:`.dap`), the
relay pump (:mod:`.relay`) and its socket and WebSocket endpoints
(:mod:`.endpoints`). Stdlib only; websocket-client is imported when a
connection is opened. The broker imports nothing else of the package."""
