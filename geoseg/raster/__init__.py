"""Raster input and output: bands, scaling, validity masks, class metadata, atomic GeoTIFF writing."""
