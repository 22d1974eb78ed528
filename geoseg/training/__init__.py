"""Training MANet on labelled rasters: pairing and cropping data, the loss, the loop."""
