"""Fake hardware and real service processes that speak the project's real interfaces."""
