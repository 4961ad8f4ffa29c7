"""Built-in provider plugins, registered through entry points exactly as a third-party plugin is."""
