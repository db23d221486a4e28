"""End-to-end jobs behind the CLI commands: recipe in, trained model / files / metrics out."""
