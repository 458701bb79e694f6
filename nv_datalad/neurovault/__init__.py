"""NeuroVault as a server: the HTTP client, what its records mean, file downloads."""
