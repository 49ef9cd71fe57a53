"""aiohttp adapters: the peer protocol (msgpack over TLS) and the operator API (JSON)."""
