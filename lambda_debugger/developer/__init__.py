"""What runs on the developer's machine: the ``lambda-debugger`` command,
the attach bridge between the IDE and the broker, the sessions client, the
VS Code configuration and the layer builder. Never shipped in the layer."""
