"""The command line: parse, call one action, render. No logic lives here."""
