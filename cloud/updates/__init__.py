"""Over-the-air updates: bundles and rollouts."""
