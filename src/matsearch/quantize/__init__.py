"""Pure encode / fit functions for compact codes."""
