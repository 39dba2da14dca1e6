"""Site units (gate, barrier, parking lift, elevator, …) that run inside the agent."""
