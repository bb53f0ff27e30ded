"""The service faces: the HTTP API and web page, and the MCP tool for language-model agents."""
