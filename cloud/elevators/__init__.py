"""Elevators: faults reported by the car boards and the monitor units."""
