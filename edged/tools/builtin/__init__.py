"""Built-in plugins: loaded through the same path as drop-in and entry-point plugins."""
