"""STAC in and out: checkpoints described as STAC Items with the Machine Learning Model (MLM) extension,
and STAC Items as scenes to predict on."""
