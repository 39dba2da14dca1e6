"""Parking lift towers: the residents' retrievals, the tower's queue and bays."""
