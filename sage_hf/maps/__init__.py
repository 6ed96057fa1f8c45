"""The difficulty map: reducers, their cache, and inversion back to vectors."""
