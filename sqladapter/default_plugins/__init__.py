"""Built-in plugins: registered through the same hook as installed ones."""

DEFAULT_PLUGINS = ("sqladapter.default_plugins.sqlite",)
