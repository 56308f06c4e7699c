"""Triggers only: each turns a binding into one core call and maps the result back."""
