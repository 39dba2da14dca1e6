"""Operator, department, grid-worker and resident accounts: passwords, sessions, CSRF, rate limits, audit."""
