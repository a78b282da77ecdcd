"""One module per subcommand: its parser beside its handler."""
