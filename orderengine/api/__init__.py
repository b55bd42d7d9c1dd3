"""HTTP and WebSocket views: parse, call the service, render. No business logic."""
