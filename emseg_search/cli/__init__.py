"""Command-line entry points: argparse plus one call into the library per command."""
