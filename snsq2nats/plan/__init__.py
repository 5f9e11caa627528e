"""Planning: rules, names, translation per resource kind, routes and the diff (pure)."""
