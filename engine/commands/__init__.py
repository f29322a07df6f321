"""One module per `bertforge` subcommand; each defines `register(subparsers)`. See engine/cli.py."""
