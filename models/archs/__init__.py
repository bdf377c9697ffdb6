"""One file per architecture family; each registers its builders with `models.registry.register_model`.
Every module in this folder is imported when the registry is first read, so a new file is all a new
architecture needs."""
