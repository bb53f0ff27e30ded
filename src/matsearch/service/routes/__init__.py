"""One router per resource: collections, documents, search, jobs, and the service's own endpoints."""
