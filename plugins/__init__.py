"""Built-in soundsight plugins (installed as ``soundsight_plugins``)."""
