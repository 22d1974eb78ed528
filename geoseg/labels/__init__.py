"""Ground truth for training and evaluation: label rasters (:mod:`geoseg.labels.raster`) and label polygons
from the GIS (:mod:`geoseg.labels.polygons`), both decoded to uint8 class indices on an image's grid.

:data:`IGNORE` marks pixels that count in neither the loss nor the scores, whichever kind the labels are.
"""

IGNORE = 255
MAX_CLASSES = 255  # a uint8 class raster with IGNORE reserved
