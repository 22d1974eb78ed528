"""Training MANet or a sibling on labelled rasters: pairing and cropping data, the loss, the loop."""
