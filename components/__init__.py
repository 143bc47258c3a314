"""ComponentResources that turn the stack config into resources, and the config parser."""
