"""Helpers for the Distilling Step-by-Step course."""
