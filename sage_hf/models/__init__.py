"""Teacher interface, headless student, export to a standard architecture."""
