"""The network (MANet), its model card and the checkpoint formats."""
