"""Asset registry: departments, grid cells and the assets they own (manhole covers, gates, lifts, …)."""
