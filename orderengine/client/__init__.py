"""The command-line client (`orderengine order|watch|orders`): a client of the HTTP API and the
WebSocket like any other, importing nothing of the server's."""
