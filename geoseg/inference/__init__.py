"""Streaming sliding-window inference: tile grid, blending, the engine and the predict API."""
