"""Subcommands of the `rhapsody` command (see `rhapsody.cli`)."""
