"""Device identities: claim tokens, provisioning, broker credentials and access control, revocation."""
