"""Pictures for people who would rather look than read: quick-looks of class rasters, evaluation plots and
training curves. matplotlib is an optional extra (``pip install 'geoseg[plot]'``), imported only when a
picture is drawn, and never through pyplot, so the caller's matplotlib state is left alone."""
