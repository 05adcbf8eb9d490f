//! Entry points for the fuzz targets (not part of the stable API).
