"""Who may do what: projects, roles, key scopes, and the audit log."""
