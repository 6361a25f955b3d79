"""``kc-sidecar`` subcommands: ``sidecar.commands.<name>.run(settings, args) -> int``.

``sidecar.cli`` imports a command module only when it runs (dashes in the command name become
underscores), so one broken optional part cannot stop the others.
"""
