"""The networks (MANet, its siblings MACU-Net and MAResU-Net), the model card and the checkpoint formats."""
