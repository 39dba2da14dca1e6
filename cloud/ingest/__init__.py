"""Ingestion: decode, validate, dedup and store what devices publish; acknowledge only what is durable."""
